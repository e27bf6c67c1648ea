"""Submit a sweep's packs to Slurm (or submitit's local executor) as one job array, through submitit.

Each array task trains one pack. The submitted callable is checkpointable: on pre-emption or at its
time limit submitit calls `checkpoint()`, which resubmits the same pack; the requeued task looks at
the run folders again and resumes every unfinished run from its last complete epoch, so it ends with
the numbers of an uninterrupted run. Failure is read from `job.exception()` and the run folders,
never from the scheduler's state (a job that raised can still show as finished). Logs of a sweep go
to one flat folder, `RESULTS/<sweep>/logs/`; the submitted job ids go to `RESULTS/<sweep>/jobs.json`.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freebits_cli import schema
from freebits_cli.errors import SpecError
from freebits_cli.results import storage
from freebits_cli.schema import JOBS_FILE, LOG_DIR
from freebits_cli.spec import RunConfig, SlurmSpec
from freebits_cli.sweep import cores
from freebits_cli.sweep.executor import make_packs, resolve_devices
from freebits_cli.sweep.pack_runner import train_pack
from freebits_cli.sweep.queue import sbatch_refusal
from freebits_cli.sweep.runs import PlannedRun

try:  # a dependency; still, without it only the cluster executors are unavailable
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - exercised by hiding the module in a test
    Checkpointable = object  # type: ignore[assignment,misc]

#: Times a task may be requeued after hitting its time limit (pre-emption does not count).
MAX_TIMEOUTS = 3
EXECUTORS = ("local", "slurm", "submitit-local")


def require_submitit() -> Any:
    """The submitit module, or a one-line error saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise SpecError(
            "--executor",
            "needs the submitit package, which is not installed (pip install submitit)",
        ) from None
    return submitit


def _replan(run: RunConfig, folder: Path) -> PlannedRun:
    """A run's state as the files say now (a requeued task finds some runs further along)."""
    state = storage.run_state(folder, run)
    start, device = 0, None
    if state == "interrupted":
        checkpoint = storage.load_checkpoint(folder / schema.CHECKPOINT)
        if checkpoint:
            start, device = int(checkpoint["epoch"]), checkpoint.get("device_type")
    return PlannedRun(run, folder, state, start, device)


class PackTask(Checkpointable):
    """One array task: train a pack's unfinished runs.

    Checkpointable's `checkpoint()` resubmits this same task (the pack, nothing else: no model state
    is pickled); the requeued task resumes its runs from their own per-epoch checkpoints."""

    def __init__(
        self, runs: Sequence[tuple[RunConfig, str]], grid_paths: Sequence[str], device: str
    ) -> None:
        self.runs = list(runs)
        self.grid_paths = list(grid_paths)
        self.device = device

    def __call__(self) -> list[dict[str, str]]:
        planned = [_replan(run, Path(folder)) for run, folder in self.runs]
        # Failed runs diverged in an earlier attempt and would again: they are not retried here.
        todo = [p for p in planned if p.state in ("pending", "interrupted")]
        for item in todo:
            if not item.start_epoch:
                storage.reset_run(item.folder)
        devices = resolve_devices(self.device)
        # On a CPU node: as many threads as the task's cores (SLURM_CPUS_PER_TASK, its cgroup).
        threads = cores.machine().count if devices[0] == "cpu" else 0
        outcomes = []
        # Members at different epochs (a kill between two members' checkpoints) form separate packs.
        for pack in make_packs(todo, len(self.runs), 1):
            outcomes += train_pack(pack, self.grid_paths, devices[0], threads)
        return [{"run_id": o.run_id, "state": o.state, "reason": o.reason} for o in outcomes]


def gpus_asked(slurm: SlurmSpec, device: str) -> int:
    """GPUs per task: none for a CPU sweep, whatever `slurm.gpus_per_node` says."""
    return 0 if device == "cpu" else slurm.gpus_per_node


def slurm_parameters(slurm: SlurmSpec, name: str, device: str = "auto") -> dict[str, Any]:
    """The `slurm:` section as submitit.AutoExecutor parameters (unset values left out; no GPU
    request at all when none is wanted: a cluster without GPUs refuses even `--gpus=0`)."""
    params: dict[str, Any] = {
        "name": f"freebits-{name}",
        "timeout_min": math.ceil(slurm.time_min),
        "gpus_per_node": gpus_asked(slurm, device) or None,
        "cpus_per_task": slurm.cpus_per_task,
        "mem_gb": slurm.mem_gb,
        "slurm_partition": slurm.partition,
        "slurm_account": slurm.account,
        "slurm_qos": slurm.qos,
        "slurm_constraint": slurm.constraint,
        "slurm_array_parallelism": slurm.array_parallelism,
        "slurm_signal_delay_s": slurm.signal_delay_s,
        "slurm_setup": list(slurm.setup) or None,
        "slurm_additional_parameters": dict(slurm.additional) or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def make_executor(
    kind: str, slurm: SlurmSpec, name: str, folder: Path, device: str = "auto"
) -> Any:
    submitit = require_submitit()
    if kind == "slurm":
        try:
            executor = submitit.AutoExecutor(
                folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUTS
            )
        except RuntimeError:  # submitit looks for srun on PATH
            raise SpecError(
                "--executor", "slurm needs Slurm's sbatch and srun on PATH (a login node)"
            ) from None
        params = slurm_parameters(slurm, name, device)
    else:  # the same jobs as local processes (what AutoExecutor(cluster="local") wraps)
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_TIMEOUTS)
        params = {
            "name": f"freebits-{name}",
            "timeout_min": slurm.time_min,
            "signal_delay_s": slurm.signal_delay_s,
        }
        if slurm.setup:
            params["setup"] = list(slurm.setup)
        import torch

        # The local executor hides every GPU unless asked (CUDA_VISIBLE_DEVICES="").
        gpus = min(gpus_asked(slurm, device), torch.cuda.device_count())
        if gpus:
            params["gpus_per_node"] = gpus
    try:
        executor.update_parameters(**params)
    except (NameError, ValueError, TypeError, AssertionError) as exc:
        raise SpecError("slurm", str(exc).strip().splitlines()[0]) from None
    return executor


@dataclass
class Submission:
    executor: str
    log_dir: Path
    jobs: list[Any]  # submitit Job objects, one per pack
    runs: list[list[str]]  # run ids of each job's pack

    @property
    def job_ids(self) -> list[str]:
        return [str(job.job_id) for job in self.jobs]

    @property
    def array_ids(self) -> list[str]:
        """The Slurm ids to follow: one per array (`123_4` -> `123`)."""
        return list(dict.fromkeys(i.split("_")[0] for i in self.job_ids))


def submit(
    sweep_dir: Path,
    packs: Sequence[Sequence[PlannedRun]],
    grid_paths: Sequence[str],
    device: str,
    slurm: SlurmSpec,
    kind: str,
    executor: Any = None,
) -> Submission:
    """Submit one task per pack, `slurm.max_array_size` tasks per array, and record the job ids.

    `executor`: from `make_executor` (made first to check the options before anything is written)."""
    submitit = require_submitit()
    log_dir = sweep_dir / LOG_DIR
    if executor is None:
        executor = make_executor(kind, slurm, sweep_dir.name, log_dir, device)
    tasks = [PackTask([(p.run, str(p.folder)) for p in pack], grid_paths, device) for pack in packs]
    jobs: list[Any] = []
    # Submitting from inside a Slurm job would hand the new jobs this job's SLURM_* variables.
    # submitit prints sbatch's refusal itself: keep it, and say it once, as one line.
    with submitit.helpers.clean_env(), contextlib.redirect_stderr(io.StringIO()):
        for start in range(0, len(tasks), slurm.max_array_size):
            try:
                with executor.batch():
                    chunk = [
                        executor.submit(t) for t in tasks[start : start + slurm.max_array_size]
                    ]
            except submitit.core.utils.FailedJobError as exc:
                if jobs:  # the arrays sbatch took are recorded, so status can follow them
                    record(sweep_dir, Submission(kind, log_dir, jobs, _ids(packs[: len(jobs)])))
                raise sbatch_refusal(str(exc)) from None
            jobs += chunk
    submission = Submission(kind, log_dir, jobs, _ids(packs))
    record(sweep_dir, submission)
    return submission


def _ids(packs: Sequence[Sequence[PlannedRun]]) -> list[list[str]]:
    return [[p.run.run_id for p in pack] for pack in packs]


def record(sweep_dir: Path, submission: Submission) -> None:
    """Append the submission to RESULTS/<sweep>/jobs.json, for `freebits status`."""
    saved = storage.read_json(sweep_dir / JOBS_FILE) or {}
    entries = saved.get("submissions", []) if isinstance(saved, dict) else []
    entries.append(
        {
            "executor": submission.executor,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "log_dir": str(submission.log_dir),
            "jobs": {j: runs for j, runs in zip(submission.job_ids, submission.runs, strict=True)},
        }
    )
    storage.write_json(sweep_dir / JOBS_FILE, {"submissions": entries})


def submitted(sweep_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(job ids of every submission of this sweep, run id -> the job that trains it)."""
    saved = storage.read_json(sweep_dir / JOBS_FILE)
    entries = saved.get("submissions", []) if isinstance(saved, dict) else []
    ids: list[str] = []
    owner: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        for job_id, runs in (entry.get("jobs") or {}).items():
            ids.append(job_id)
            owner.update({run_id: job_id for run_id in runs})
    return ids, owner


def job_errors(submission: Submission) -> list[str]:
    """One line per finished job that raised (or died), from `job.exception()`."""
    errors = []
    for job in submission.jobs:
        try:
            exc = job.exception()
        except Exception as failure:  # no result at all: killed, or the node vanished
            exc = failure
        if exc is not None:
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            errors.append(f"job {job.job_id}: {last}")
    return errors
