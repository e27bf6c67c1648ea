"""Real processes: two sweeps sharing one folder, and SIGTERM/SIGINT in the middle of an epoch."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sweeps
from threads import torch_threads

from freebits_cli.results import locks, storage
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import executor

ARGS = ["--latent-dim", "3", "--device", "cpu", "--set", "model.hidden=[16]"]
ARGS += ["--set", "eval.iwae_samples=4", "--set", "eval.samples=2", "--set", "train.batch_size=128"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
COMMAND = [sys.executable, "-m", "freebits_cli", "sweep", *ARGS]


def spec(lambdas: list[float], epochs: int) -> Any:
    overrides = [("grid.lambda", lambdas), ("train.epochs", epochs), ("model.latent_dim", 3)]
    overrides += [("train.device", "cpu"), ("model.hidden", [16]), ("eval.iwae_samples", 4)]
    overrides += [("eval.samples", 2), ("train.batch_size", 128)]
    return build_spec(None, overrides)


def lone_sweep(out: Path, lambdas: list[float], epochs: int, pack_size: int = 0) -> None:
    sweeps.train(spec(lambdas, epochs), out, pack_size=pack_size)


def results(out: Path) -> dict[str, Any]:
    """Per run: metrics.csv without the seconds column, kl_per_dim.csv, the summary's numbers."""
    found = {}
    for folder in sorted((out / "default" / "runs").iterdir()):
        metrics = [line.rsplit(",", 1)[0] for line in (folder / "metrics.csv").read_text().split()]
        kl = (folder / "kl_per_dim.csv").read_text()
        summary = storage.read_summary(folder)
        assert summary is not None, folder
        numbers = {
            k: v for k, v in summary.items() if k not in ("seconds", "pack_seconds", "device")
        }
        found[folder.name] = (metrics, kl, numbers)
    return found


def assert_clean_csvs(out: Path, epochs: int) -> None:
    for folder in (out / "default" / "runs").iterdir():
        assert storage.csv_epochs(folder / "metrics.csv") == list(range(1, epochs + 1)), folder
        kl = storage.csv_epochs(folder / "kl_per_dim.csv") or []
        assert kl == sorted(kl) and len(kl) == 3 * epochs, folder  # D = 3 rows per epoch, once


@pytest.mark.parametrize("round_", [1, 2])
def test_two_sweeps_on_one_folder_share_the_work(tmp_path: Path, round_: int) -> None:
    lambdas, epochs = [0, 0.5, 1, 2], 3
    flags = ["--lambdas", "0,0.5,1,2", "--epochs", str(epochs), "--pack-size", "1"]
    flags += ["--out", str(tmp_path / "shared")]
    procs = [
        subprocess.Popen(
            [*COMMAND, *flags], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stdout + stderr
    trained = [int(re.search(r"trained (\d+) run\(s\) here", o).group(1)) for o, _ in outs]
    assert sum(trained) == len(lambdas), outs  # each run trained once, by one of the two
    assert_clean_csvs(tmp_path / "shared", epochs)
    lone_sweep(tmp_path / "lone", lambdas, epochs, pack_size=1)
    assert results(tmp_path / "shared") == results(tmp_path / "lone")
    assert not list((tmp_path / "shared").rglob(".*.tmp*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_stops_cleanly_and_resumes_exactly(tmp_path: Path, signum: int) -> None:
    flags = ["--lambdas", "0,1", "--epochs", "8", "--out", str(tmp_path / "b")]
    proc = subprocess.Popen(
        [*COMMAND, *flags], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "b").glob("default/runs/*/*.pt")):
        time.sleep(0.02)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stdout + stderr
    name = signal.Signals(signum).name
    assert f"stopped by {name}" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    runs = sorted((tmp_path / "b" / "default" / "runs").iterdir())
    assert not list((tmp_path / "b").glob("default/runs/*/summary.json")), "stopped too late"
    assert all(locks.holder(folder) is None for folder in runs)  # released
    from typer.testing import CliRunner

    from freebits_cli.cli import app

    with torch_threads(1):  # the same command, resumed in this process (as ENV, one thread)
        done = CliRunner().invoke(app, ["sweep", *ARGS, *flags])
    assert done.exit_code == 0, done.output
    assert_clean_csvs(tmp_path / "b", 8)
    lone_sweep(tmp_path / "a", [0, 1], 8)
    assert results(tmp_path / "b") == results(tmp_path / "a")


def test_a_locked_run_is_left_alone_and_shown_running(tmp_path: Path) -> None:
    """A run another process holds is neither reset nor trained; `status` names its holder."""
    from typer.testing import CliRunner

    from freebits_cli.cli import app

    the_spec = spec([0, 1], 1)
    plan = executor.plan(the_spec, tmp_path)
    executor.prepare(plan, the_spec)
    held = plan.runs[0].folder
    lock = locks.try_lock(held)  # another open file: flock treats it as another holder
    assert lock is not None
    (held / "metrics.csv").write_text("epoch\n1\n")  # what its holder has written so far
    packs = executor.make_packs(plan.todo, 0, 1)
    with torch_threads(1):  # the engine's view: a held run is "busy" (run_sweep would wait)
        outcomes = {o.run_id: o for o in executor.execute(plan, packs, ["cpu"], 1)}
    me = f"{socket.gethostname()}/{os.getpid()}"
    assert outcomes[held.name].state == "busy" and me in outcomes[held.name].reason
    assert outcomes[plan.runs[1].folder.name].state == "done"
    assert (held / "metrics.csv").read_text() == "epoch\n1\n"  # not reset under its holder
    status = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert status.exit_code == 0 and "1 done, 1 running" in status.output
    assert str(os.getpid()) in status.output  # the table names the holder: running (host/pid)
    lock.release()
    assert locks.holder(held) is None and locks.try_lock(held, 0) is not None
