"""Scale-out: run identity, memory-sized packs, dry-run cost, worker processes, shards, and Slurm
through submitit (the local executor for real jobs, stub sbatch/srun/sacct for the sbatch file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.cli import progress as cli_progress
from freebits_cli.cli import submit as cli_submit
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import cluster, cost, executor

runner = CliRunner()
ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TINY = [
    "--set",
    "model.hidden=[16]",
    "--latent-dim",
    "2",
    "--device",
    "cpu",
    "--set",
    "eval.iwae_samples=5",
    "--set",
    "eval.samples=2",
    "--set",
    "train.batch_size=32",
]
#: The same settings as overrides, for the library calls.
TINY_SPEC: list[tuple[str, Any]] = [
    ("grid.lambda", [0, 1]),
    ("train.epochs", 3),
    ("model.hidden", [16]),
    ("model.latent_dim", 2),
    ("train.device", "cpu"),
    ("train.batch_size", 32),
    ("eval.iwae_samples", 5),
    ("eval.samples", 2),
]
METRICS = ("test_elbo", "test_recon", "test_kl", "test_iwae_nll", "test_mi", "active_units")


def summaries(sweep: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("runs/*/summary.json")}


def same_numbers(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> None:
    assert a and set(a) == set(b)
    for run_id in a:
        for key in (*METRICS, "kl_per_dim"):
            assert b[run_id][key] == a[run_id][key], (run_id, key)


def sweep_cli(out: Path, *args: str) -> Any:
    result = runner.invoke(app, ["sweep", "--out", str(out), *TINY, *args])
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """λ ∈ {0, 1}, 3 epochs, trained in this process with --jobs 1."""
    out = tmp_path_factory.mktemp("reference")
    result = sweep_cli(out, "--lambdas", "0,1", "--epochs", "3", "--jobs", "1")
    assert result.exit_code == 0, result.output
    return out / "default"


# -- run identity ---------------------------------------------------------------------------------


def test_run_id_ignores_device_and_data_dir() -> None:
    base = [("grid.lambda", [0.5])]
    ids = {
        build_spec(None, [*base, *extra]).expand()[0].run_id
        for extra in (
            [],
            [("train.device", "cpu")],
            [("train.device", "cuda:1")],
            [("dataset.data_dir", "/elsewhere")],
        )
    }
    assert len(ids) == 1
    other = build_spec(None, [*base, ("train.lr", 3e-4)]).expand()[0].run_id
    assert other not in ids
    slurm = build_spec(None, [*base, ("slurm.partition", "gpu")]).expand()[0].run_id
    assert slurm in ids


def test_runs_written_by_a_version_without_todays_fields_are_not_retrained(
    reference: Path, tmp_path: Path
) -> None:
    import shutil

    sweep = tmp_path / "default"
    shutil.copytree(reference, sweep)
    spec = build_spec(None, TINY_SPEC)
    first, second = sorted(spec.expand(), key=lambda r: r.run_id)
    # Trained on another device and data folder by a version without some of today's fields.
    moved = sweep / "runs" / second.run_id
    config = json.loads((moved / "config.json").read_text())
    config["config"]["train"]["device"] = "cuda:1"
    config["config"]["dataset"]["data_dir"] = "/data/elsewhere"
    # Written before fields with defaults were added: the defaults are what it computed with.
    for section, key in (("model", "arch"), ("model", "likelihood"), ("train", "cuda_graph")):
        del config["config"][section][key]
    (moved / "config.json").write_text(json.dumps(config))
    plan = executor.plan(spec, tmp_path)
    assert [r.state for r in plan.runs] == ["done", "done"]
    result = sweep_cli(tmp_path, "--lambdas", "0,1", "--epochs", "3")
    assert result.exit_code == 0 and "0 to train" in result.output, result.output
    assert sorted(p.name for p in (sweep / "runs").iterdir()) == sorted(
        [first.run_id, second.run_id]
    )


# -- memory, dry run, output for scripts ----------------------------------------------------------


def test_memory_estimate_follows_the_formula() -> None:
    (run,) = build_spec(
        None, [("grid.lambda", [0]), ("model.hidden", [20, 10]), ("model.latent_dim", 3)]
    ).expand()
    memory = cost.estimate_memory(run, (8, 8), n_train=100, n_test=50)
    p, h, d = 64, 30, 3
    # encoder 64-20-10 -> 2·3, decoder 3-10-20-64, weights and biases
    params = (64 * 20 + 20) + (20 * 10 + 10) + (10 * 6 + 6) + (3 * 10 + 10) + (10 * 20 + 20)
    params += 20 * 64 + 64
    assert memory.parameters == params
    activations = 4 * (2 * p + 2 * h + 3 * d) * run.train.batch_size
    evaluation = max(4 * (2 * p + h + 3 * d) * 50, 16 * cost.IWAE_ELEMENTS)
    assert memory.per_member == 16 * params + activations + evaluation
    assert memory.shared == 4 * p * 150
    room = memory.shared + 3 * memory.per_member
    assert cost.members_that_fit(memory, int(room / cost.HEADROOM) + 1) == 3
    assert cost.members_that_fit(memory, memory.shared) == 0


def test_pack_size_comes_from_memory_and_a_config_that_cannot_fit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (run,) = build_spec(None, [("grid.lambda", [0]), ("model.hidden", [16])]).expand()
    data = executor.dataset(run.dataset)
    memory = cost.estimate_memory(run, data.image_shape, len(data.x_train), len(data.x_test))
    room = int((memory.shared + 2.5 * memory.per_member) / cost.HEADROOM)
    monkeypatch.setattr(cost, "available_bytes", lambda device: room)
    result = sweep_cli(tmp_path, "--dry-run", "--no-pilot", "--lambdas", "0,0.1,0.5,1,2")
    assert result.exit_code == 0, result.output
    assert "5 to train in 3 pack(s)" in result.output  # 2 + 2 + 1: what the memory holds
    huge = sweep_cli(tmp_path, "--dry-run", "--set", "model.hidden=[300000,300000]")
    assert huge.exit_code == 2, huge.output
    assert "one run needs about" in huge.output and "GiB" in huge.output
    lines = huge.output.strip().splitlines()  # one error line, beside the note on the two --set
    assert [line for line in lines if "the later --set wins" not in line] == lines[-1:]


def test_dry_run_plan_with_and_without_pilot(tmp_path: Path) -> None:
    result = sweep_cli(tmp_path, "--dry-run", "--lambdas", "0,1,2", "--pack-size", "2")
    assert result.exit_code == 0, result.output
    assert "3 to train in 2 pack(s)" in result.output
    assert "cpu (in process)" in result.output and "pilot on cpu" in result.output
    assert "estimated" in result.output and "wall" in result.output
    quick = sweep_cli(
        tmp_path, "--dry-run", "--no-pilot", "--executor", "slurm", "--pack-size", "1"
    )
    assert quick.exit_code == 0, quick.output
    assert "array 0 task 4" in quick.output and "no time estimate" in quick.output
    assert not (tmp_path / "default").exists()


def test_status_and_sweep_json_and_wide_tables(reference: Path) -> None:
    status = runner.invoke(app, ["status", str(reference), "--json"])
    assert status.exit_code == 0, status.output
    rows = [json.loads(line) for line in status.output.strip().splitlines()]
    assert {r["state"] for r in rows} == {"done"} and len(rows) == 2
    assert all(isinstance(r["test_elbo"], float) and r["epochs_done"] == "3/3" for r in rows)
    table = runner.invoke(app, ["status", str(reference)])
    for row in rows:  # not cut to fit 80 columns: this output is not a terminal
        assert row["run_id"] in table.output
    again = sweep_cli(reference.parent, "--lambdas", "0,1", "--epochs", "3", "--json")
    assert again.exit_code == 0
    lines = [json.loads(x) for x in again.stdout.strip().splitlines()]
    assert {x["run_id"] for x in lines} == {r["run_id"] for r in rows}


def test_sweep_json_keeps_progress_off_stdout(tmp_path: Path) -> None:
    result = sweep_cli(tmp_path, "--lambdas", "0", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()  # only the run, as JSON
    assert json.loads(line)["state"] == "done" and "runs done" in result.stderr


def test_version() -> None:
    import torch

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert "freebits 0." in result.output and f"torch {torch.__version__}" in result.output
    assert "CUDA" in result.output


# -- worker processes and shards ------------------------------------------------------------------


def test_cuda_means_every_visible_gpu_one_worker_each(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from freebits_cli.sweep import dryrun

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)  # what CUDA_VISIBLE_DEVICES leaves
    for device in ("cuda", "auto"):
        assert executor.resolve_devices(device) == ["cuda:0", "cuda:1", "cuda:2"]
    assert executor.resolve_devices("cuda:2") == ["cuda:2"]
    assert executor.default_jobs(executor.resolve_devices("cuda")) == 3
    where = dryrun.where_local(4, ["cuda:0", "cuda:1", "cuda:2"], 3, None)
    assert where[0].startswith("cuda:0 (worker 0") and where[3].startswith("cuda:0 (worker 0")
    assert where[2].startswith("cuda:2 (worker 2")
    # A queue: the fourth pack goes to whichever slot frees first.
    assert dryrun._makespan([5.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert dryrun._makespan([1.0] * 4, 1) == 4.0


def test_jobs_2_gives_the_numbers_of_jobs_1(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_progress, "LOG_EVERY_S", 0.0)  # a progress line at every epoch
    result = sweep_cli(tmp_path, "--lambdas", "0,1", "--epochs", "3", "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert "in 2 pack(s)" in result.output
    for pack in (1, 2):  # the workers' epochs reach the parent's progress
        assert f"pack {pack}/2 (1 run): 3/3 epochs done" in result.output
    same_numbers(summaries(reference), summaries(tmp_path / "default"))


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_every_worker_and_the_sweep_resumes_exactly(tmp_path: Path) -> None:
    # Small batches make epochs long enough that the signal lands mid-sweep on a fast machine too:
    # after the first epoch's row, two epochs of 360 steps each are still to go.
    args = ["--lambdas", "0,1", "--epochs", "3", "--set", "train.batch_size=4"]
    alone = sweep_cli(tmp_path / "reference", *args, "--jobs", "1")
    assert alone.exit_code == 0, alone.output
    out = tmp_path / "stopped"
    command = [sys.executable, "-m", "freebits_cli", "sweep", "--out", str(out), *TINY, *args]
    command += ["--jobs", "2"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("default/runs/*/metrics.csv")):
        time.sleep(0.05)
    workers = [p for p in _children(proc.pid) if _alive(p)]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert b"SIGTERM" in err and b"Traceback" not in err
    time.sleep(2)
    assert workers and not [p for p in workers if _alive(p)]
    assert len(list(out.glob("default/runs/*/summary.json"))) < 2, "stopped too late"
    again = sweep_cli(out, *args)  # resumed in this process
    assert again.exit_code == 0, again.output
    same_numbers(summaries(tmp_path / "reference" / "default"), summaries(out / "default"))


def test_two_shards_in_two_processes_share_one_folder(reference: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "freebits_cli", "sweep", "--out", str(tmp_path), *TINY]
    base += ["--lambdas", "0,1", "--epochs", "3"]
    procs = [
        subprocess.Popen(
            [*base, "--shard", f"{i}/2"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(b"1 to train" in out for out, _ in outputs)
    same_numbers(summaries(reference), summaries(tmp_path / "default"))
    for folder in (tmp_path / "default" / "runs").iterdir():
        rows = (folder / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 3  # header + one row per epoch: trained once


# -- Slurm through submitit -----------------------------------------------------------------------


def test_submitit_local_end_to_end(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_submit, "WATCH_INTERVAL_S", 0.2)
    result = sweep_cli(
        tmp_path, "--lambdas", "0,1", "--epochs", "3", "--executor", "submitit-local"
    )
    assert result.exit_code == 0, result.output
    assert "logs: " + str(tmp_path / "default" / "logs") in result.output
    same_numbers(summaries(reference), summaries(tmp_path / "default"))
    status = runner.invoke(app, ["status", str(tmp_path), "--json"])
    rows = [json.loads(line) for line in status.output.strip().splitlines()]
    assert {r["state"] for r in rows} == {"done"} and all(r["job"] for r in rows)
    assert list((tmp_path / "default" / "logs").glob("*_log.err"))


def _task_pids(log_dir: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in args and str(log_dir).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def test_requeued_task_resumes_to_the_uninterrupted_numbers(
    reference: Path, tmp_path: Path
) -> None:
    """The time-limit path: USR2 reaches the task, submitit calls checkpoint() and requeues it;
    the requeued task resumes its runs from their per-epoch checkpoints."""
    spec = build_spec(
        None,
        [
            *TINY_SPEC,
            # Far from a real time limit, but small enough that submitit counts the signal as one
            # (so the requeue takes the time-limit path, the one needing checkpoint()).
            ("slurm.time_min", 5),
            ("slurm.signal_delay_s", 0),
        ],
    )
    plan = executor.plan(spec, tmp_path)
    executor.prepare(plan, spec)
    packs = executor.make_packs(plan.todo, 0, 1)
    sub = cluster.submit(
        plan.sweep_dir, packs, plan.grid_paths, "cpu", spec.slurm, "submitit-local"
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(plan.sweep_dir.glob("runs/*/checkpoint.pt")):
        time.sleep(0.05)
    (pid,) = _task_pids(sub.log_dir)
    os.kill(pid, signal.SIGUSR2)  # what the local controller sends signal_delay_s before the limit
    sub.jobs[0].wait()
    assert cluster.job_errors(sub) == []
    log = "".join(p.read_text() for p in sorted(sub.log_dir.glob("*_log.*")))
    assert "this job is timed-out" in log and "Calling checkpoint method" in log
    assert "Requeued job" in log and log.count("Loading pickle") == 2
    same_numbers(summaries(reference), summaries(plan.sweep_dir))  # slurm: is not in the run id


def _stubs(folder: Path) -> Path:
    folder.mkdir()
    # Each call gets the next job id, and records whether SLURM_* variables leaked into sbatch.
    (folder / "sbatch").write_text(
        "#!/bin/sh\n"
        'n=$(cat "$0.n" 2>/dev/null || echo 4242); echo $((n + 1)) > "$0.n"\n'
        'echo "${SLURM_JOB_ID:-clean}" >> "$0.env"\n'
        'echo "Submitted batch job $n"\n'
    )
    for name in ("srun", "sacct", "scancel"):
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
    for path in folder.iterdir():
        path.chmod(0o755)
    return folder


def test_slurm_sbatch_file_has_the_array_partition_time_and_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs = _stubs(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # submitting from inside a job: cleaned for sbatch
    result = sweep_cli(
        tmp_path / "out",
        *("--lambdas", "0,0.5,1,2", "--seeds", "0,1", "--pack-size", "2"),
        *("--executor", "slurm", "--no-wait"),
        *("--set", "slurm.partition=gpu", "--set", "slurm.time_min=90"),
        *("--set", "slurm.array_parallelism=1", "--set", "slurm.max_array_size=2"),
        *("--set", 'slurm.setup=["module load cuda", "source venv/bin/activate"]'),
        *("--set", "slurm.additional={mail-type: END}"),
    )
    assert result.exit_code == 0, result.output
    assert "job 4242, 4243" in result.output and "freebits status" in result.output
    assert (stubs / "sbatch.env").read_text().split() == ["clean", "clean"]
    logs = tmp_path / "out/default/logs"
    first, second = (logs / f"{n}_submission.sh" for n in (4242, 4243))
    # 4 packs, at most 2 tasks per array: two arrays, one task at a time each
    assert "#SBATCH --array=0-1%1" in first.read_text()
    assert "#SBATCH --array=0-1%1" in second.read_text()
    text = first.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --mail-type=END",
        "module load cuda",
        "source venv/bin/activate",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in text, line
    saved = json.loads((tmp_path / "out/default/jobs.json").read_text())
    assert sorted(saved["submissions"][0]["jobs"]) == ["4242_0", "4242_1", "4243_0", "4243_1"]
    status = runner.invoke(app, ["status", str(tmp_path / "out")])
    assert "8 queued" in status.output and "4242_0" in status.output
    assert "submitted as job 4242 (2 tasks), 4243 (2 tasks)" in status.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "slurm.partitio=gpu"], "valid keys: account, additional"),
        (["--set", "slurm.time_min=0"], "slurm.time_min"),
        (["--set", "slurm.setup={a: 1}"], "slurm.setup"),
        (["--set", "slurm.additional=[1]"], "slurm.additional"),
        (["--executor", "pbs"], "--executor"),
    ],
)
def test_bad_slurm_options_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{_stubs(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    result = sweep_cli(tmp_path, "--executor", "slurm", "--no-wait", *args)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "default").exists()


def test_slurm_without_sbatch_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    result = sweep_cli(tmp_path, "--executor", "slurm")
    assert result.exit_code == 2 and "srun on PATH" in result.output, result.output
    assert not (tmp_path / "default").exists()


def test_missing_submitit_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    result = sweep_cli(tmp_path, "--executor", "submitit-local")
    assert result.exit_code == 2, result.output
    assert "submitit" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "default").exists()
