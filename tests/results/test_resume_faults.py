"""A kill between any two writes of a sweep resumes every member of the pack together, exactly.

Every write a training pack makes (config, checkpoints, CSV rows, promotions, samples, summaries,
checkpoint removal) is counted; for each position N the sweep is stopped just before write N, as
a kill there would, then resumed. Every member must end bit-identical to an uninterrupted sweep,
resume in one pack with all its mates, and leave no duplicate row, checkpoint or temporary file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sweeps
from faults import Kill, count_writes

from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import executor

SMALL = [
    ("model.hidden", [16]),
    ("model.latent_dim", 3),
    ("train.epochs", 2),
    ("train.batch_size", 256),
    ("train.device", "cpu"),
    ("eval.iwae_samples", 4),
    ("eval.samples", 2),
    ("grid.lambda", [0, 1]),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def sweep(out: Path, on_epoch: Callable[..., None] | None = None) -> None:
    spec = build_spec(None, SMALL)
    sweeps.run(spec, out, on_epoch=on_epoch)


def outputs(out: Path) -> dict[str, Any]:
    """Everything a run keeps, but the wall-clock seconds."""
    found = {}
    for folder in sorted((out / "default" / "runs").iterdir()):
        summary = json.loads((folder / "summary.json").read_text())
        for key in ("seconds", "pack_seconds", "device"):
            summary.pop(key)
        metrics = [line.rsplit(",", 1)[0] for line in (folder / "metrics.csv").read_text().split()]
        found[folder.name] = (summary, metrics, (folder / "kl_per_dim.csv").read_text())
    return found


def test_a_kill_between_any_two_writes_resumes_the_pack_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        writes = count_writes(patch, None)
        sweep(tmp_path / "straight")
    expected = outputs(tmp_path / "straight")
    assert len(expected) == 2 and len(writes) == 1 + 2 + 2 * 8 + 2 + 6, writes
    exact = 0
    for kill_at in range(1, len(writes) + 1):
        out = tmp_path / f"kill{kill_at}"
        with monkeypatch.context() as patch:
            count_writes(patch, kill_at)
            with pytest.raises(Kill):
                sweep(out)
        packs: list[set[str]] = []
        sweep(out, on_epoch=lambda ids, epoch, epochs, seen=packs: seen.append(set(ids)))
        where = f"killed before write {kill_at}, {writes[kill_at - 1]}"
        assert all(p == set(expected) for p in packs), (where, packs)  # one pack, all members
        assert outputs(out) == expected, where
        left = {p.name for p in out.rglob("*") if p.is_file()} - {".lock", "spec.yaml"}
        assert left == {"config.json", "metrics.csv", "kl_per_dim.csv", "samples.npz"} | {
            "model.pt",
            "summary.json",
        }, where
        exact += 1
    assert exact == len(writes) == 27


KILLER = """
import os, sys
from freebits_cli.results import storage
real, count, at = storage.append_rows, [0], int(os.environ["KILL_AT"])
def append_rows(*args, **kwargs):
    count[0] += 1
    if count[0] == at:
        os._exit(137)  # as kill -9: no cleanup, no flush, the lock dropped by the OS
    return real(*args, **kwargs)
storage.append_rows = append_rows
from freebits_cli.cli import app
app(sys.argv[1:])
"""


def test_os_exit_between_rows_of_a_pack_then_resume_from_the_cli(tmp_path: Path) -> None:
    """A real process death after one member's rows of epoch 1 but before the other's."""
    args = ["sweep", "--lambdas", "0,1", "--epochs", "2", "--latent-dim", "3", "--device", "cpu"]
    args += ["--set", "model.hidden=[16]", "--set", "eval.iwae_samples=4"]
    args += ["--set", "train.batch_size=256", "--set", "eval.samples=2", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    # Row writes of epoch 1: member 1's metrics and KL, then member 2's: die before the third.
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, *args], env={**env, "KILL_AT": "3"}, capture_output=True
    )
    assert killed.returncode == 137
    plan = executor.plan(build_spec(None, SMALL), tmp_path)
    assert {r.start_epoch for r in plan.runs} == {1}
    assert {r.pack for r in plan.runs} == {tuple(r.run.run_id for r in plan.runs)}
    # The resume runs the same command line in this process (on one thread, as the killed one):
    # a second process start would be most of this test's time.
    from typer.testing import CliRunner

    from freebits_cli.cli import app

    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    sweep(tmp_path / "straight")
    assert outputs(tmp_path) == outputs(tmp_path / "straight")
