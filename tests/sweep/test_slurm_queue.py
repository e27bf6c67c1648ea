"""Slurm's answers, with stub sbatch/squeue/scancel: a CPU sweep asks for no GPU; sbatch's refusal
and a pending reason that can never clear come back as one line naming the `slurm:` key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.cli import submit as cli_submit
from freebits_cli.sweep import queue

runner = CliRunner()
TINY = [
    *("--set", "model.hidden=[16]", "--latent-dim", "2", "--epochs", "1"),
    *("--set", "eval.iwae_samples=2", "--lambdas", "0,1", "--pack-size", "1"),
]
SBATCH_OK = 'echo "Submitted batch job 4242"\n'
REFUSED = (
    "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification"
)


def stubs(folder: Path, sbatch: str, squeue: str = "") -> Path:
    """sbatch, srun, sacct (knows no job: they stay unfinished), squeue (the `squeue.N` file's
    text on its N-th call, the last one after that), scancel (records its arguments)."""
    folder.mkdir()
    (folder / "sbatch").write_text("#!/bin/sh\n" + sbatch)
    (folder / "squeue").write_text(
        "#!/bin/sh\n"
        'n=$(( $(cat "$0.calls" 2>/dev/null || echo 0) + 1 )); echo $n > "$0.calls"\n'
        'f="$0.$n"; [ -f "$f" ] || f=$(ls "$0".[0-9]* | sort -t. -k2 -n | tail -1)\n'
        'cat "$f"\n'
    )
    (folder / "squeue.1").write_text(squeue)
    (folder / "scancel").write_text('#!/bin/sh\necho "$@" >> "$0.args"\n')
    for name in ("srun", "sacct"):
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
    for path in folder.iterdir():
        path.chmod(0o755)
    return folder


def slurm_sweep(out: Path, bin_dir: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> object:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return runner.invoke(app, ["sweep", "--out", str(out), *TINY, "--executor", "slurm", *args])


@pytest.mark.parametrize(("device", "gpus"), [("cpu", None), ("auto", "1")])
def test_a_cpu_sweep_asks_slurm_for_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, gpus: str | None
) -> None:
    bin_dir = stubs(tmp_path / "bin", SBATCH_OK)
    result = slurm_sweep(tmp_path / "out", bin_dir, monkeypatch, "--device", device, "--no-wait")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    text = (tmp_path / "out/default/logs/4242_submission.sh").read_text()
    if gpus is None:
        assert "gpu" not in text.lower() and "gres" not in text
    else:
        assert f"#SBATCH --gpus-per-node={gpus}" in text


def test_sbatch_refusal_is_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = stubs(tmp_path / "bin", f'echo "{REFUSED}" >&2\nexit 1\n')
    result = slurm_sweep(tmp_path / "out", bin_dir, monkeypatch, "--device", "auto", "--no-wait")
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert lines[-1] == (
        "error: slurm.gpus_per_node: sbatch refused the job (Invalid generic resource (gres) "
        "specification); use 0 on a partition without GPUs"
    )
    assert "FailedJobError" not in result.output  # type: ignore[attr-defined]
    assert sum(REFUSED in line for line in lines) == 0  # said once, in our words


def test_pending_reason_is_shown_and_a_hopeless_one_stops_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = stubs(tmp_path / "bin", SBATCH_OK, "4242_0|PENDING|Priority\n4242_1|RUNNING|None\n")
    (bin_dir / "squeue.2").write_text("4242_0|PENDING|Priority\n4242_1|PENDING|PartitionConfig\n")
    monkeypatch.setattr(cli_submit, "WATCH_INTERVAL_S", 0.05)
    monkeypatch.setattr(cli_submit, "SQUEUE_INTERVAL_S", 0.0)
    result = slurm_sweep(tmp_path / "out", bin_dir, monkeypatch, "--device", "cpu")
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, out  # type: ignore[attr-defined]
    assert "pending because (squeue)" in out and "Priority (1 task)" in out
    assert out.strip().splitlines()[-1] == (
        "error: slurm.cpus_per_task: job 4242_1 can never start: squeue gives the reason "
        "PartitionConfig (cpus_per_task, mem_gb and gpus_per_node must fit on one node of the "
        "partition); job 4242 cancelled"
    )
    assert (bin_dir / "squeue.calls").read_text().strip() == "2"
    assert "4242_0" in (bin_dir / "scancel.args").read_text()


@pytest.mark.parametrize(
    ("reason", "key"),
    [
        ("PartitionConfig", "slurm.cpus_per_task"),
        ("PartitionTimeLimit", "slurm.time_min"),
        ("QOSMaxWallDurationPerJobLimit", "slurm.time_min"),
        ("AssocMaxGRESPerJob", "slurm.gpus_per_node"),
        ("InvalidAccount", "slurm.account"),
    ],
)
def test_reasons_that_never_clear_name_their_key(reason: str, key: str) -> None:
    never = queue.never_starts(reason)
    assert never is not None and never[0] == key


@pytest.mark.parametrize("reason", ["Priority", "Resources", "QOSMaxJobsPerUserLimit", "None"])
def test_reasons_that_clear_by_themselves_do_not_stop(reason: str) -> None:
    assert queue.never_starts(reason) is None


@pytest.mark.parametrize(
    ("said", "key"),
    [
        ("Invalid account or account/partition combination specified", "slurm.account"),
        ("Invalid partition name specified", "slurm.partition"),
        ("Requested node configuration is not available", "slurm.cpus_per_task"),
        ("Something new", "slurm"),
    ],
)
def test_sbatch_refusals_name_their_key(said: str, key: str) -> None:
    error = queue.sbatch_refusal(f"sbatch: error: Batch job submission failed: {said}\n")
    assert error.field == key and said in str(error)
