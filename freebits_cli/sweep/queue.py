"""What Slurm says about a sweep's jobs, turned into the `slurm:` key to change.

sbatch refuses a job it cannot place at all (an unknown partition, a GPU asked of a cluster
without any); a job it accepts may still pend for good when it asks for more than any node has
(squeue's reason `PartitionConfig`) or breaks a per-job limit. Both come back as one line naming
the key. Reason codes: Slurm's squeue(1), "JOB REASON CODES".
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from freebits_cli.errors import SpecError

#: Words of sbatch's error -> (the key to change, what to do).
SBATCH_REFUSALS = (
    ("gres", "slurm.gpus_per_node", "use 0 on a partition without GPUs"),
    ("account", "slurm.account", "name an account you may charge (sacctmgr show assoc)"),
    ("qos", "slurm.qos", "name a QOS of your account (sacctmgr show qos)"),
    ("partition", "slurm.partition", "name one of this cluster's partitions (sinfo lists them)"),
    ("feature", "slurm.constraint", "ask for features the nodes have (sinfo -o %f)"),
    ("time limit", "slurm.time_min", "ask for at most the partition's time limit"),
    ("memory", "slurm.mem_gb", "ask for at most what one node has"),
    ("node configuration", "slurm.cpus_per_task", "ask for at most what one node has"),
    ("array", "slurm.max_array_size", "use at most the cluster's MaxArraySize minus one"),
)
_RESOURCES = "cpus_per_task, mem_gb and gpus_per_node must fit on one node of the partition"
#: squeue reasons that mean the job can never start as submitted -> (key, why).
NEVER_STARTS = {
    "PartitionConfig": ("slurm.cpus_per_task", _RESOURCES),
    "PartitionNodeLimit": ("slurm.cpus_per_task", _RESOURCES),
    "PartitionTimeLimit": ("slurm.time_min", "more time than the partition allows"),
    "BadConstraints": ("slurm.constraint", "no node has the features asked for"),
    "InvalidAccount": ("slurm.account", "the account does not exist or may not use the partition"),
    "InvalidQOS": ("slurm.qos", "the QOS does not exist or may not be used"),
}
#: Per-job QOS or association limits (QOSMaxCpuPerJobLimit, AssocMaxWallDurationPerJobLimit, …):
#: the word in the reason -> the key.
PER_JOB_LIMITS = (
    ("WallDuration", "slurm.time_min"),
    ("Mem", "slurm.mem_gb"),
    ("GRES", "slurm.gpus_per_node"),
    ("Cpu", "slurm.cpus_per_task"),
    ("Node", "slurm.cpus_per_task"),
)


def sbatch_refusal(stderr: str) -> SpecError:
    """sbatch's error output as one SpecError naming the `slurm:` key to change."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    said = lines[-1] if lines else "no message"
    for prefix in ("sbatch: error: ", "Batch job submission failed: "):
        said = said.removeprefix(prefix)
    for words, key, fix in SBATCH_REFUSALS:
        if words in said.lower():
            return SpecError(key, f"sbatch refused the job ({said}); {fix}")
    return SpecError("slurm", f"sbatch refused the job ({said}); change the spec's slurm: section")


def pending_reasons(job_ids: Sequence[str]) -> dict[str, str]:
    """squeue's reason for each pending task of these jobs (array tasks one by one, `123_4`);
    {} when squeue cannot be asked."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return {}
    command = ["squeue", "--noheader", "--array", "--format=%i|%T|%r", f"--jobs={','.join(arrays)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    reasons = {}
    for line in done.stdout.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[1] == "PENDING":
            reasons[parts[0]] = parts[2]
    return reasons


def never_starts(reason: str) -> tuple[str, str] | None:
    """(key, why) when a pending job with this reason can never start as submitted."""
    if reason in NEVER_STARTS:
        return NEVER_STARTS[reason]
    if reason.startswith(("QOSMax", "AssocMax")) and "PerJob" in reason:
        key = next((k for word, k in PER_JOB_LIMITS if word in reason), "slurm")
        return key, "it exceeds a per-job limit of the QOS or account"
    return None
