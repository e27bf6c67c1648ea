"""Training packs: pack equivalence, exact resume after interruption, divergence handling."""

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
import sweeps
import torch

from freebits_cli import schema
from freebits_cli.engine.train import learning_rate
from freebits_cli.results.records import collapse_epochs
from freebits_cli.spec import SweepSpec
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import executor

METRICS = ("test_elbo", "test_recon", "test_kl", "test_iwae_nll", "test_mi", "active_units")
METRICS_EPOCH = schema.METRICS_COLUMNS.index("epoch")
SMALL = [
    ("model.hidden", [32]),
    ("model.latent_dim", 4),
    ("train.epochs", 2),
    ("train.device", "cpu"),
    ("eval.iwae_samples", 10),
    ("eval.samples", 2),
]


def small_spec(*extra: tuple[str, Any]) -> SweepSpec:
    return build_spec(None, [*SMALL, *extra])


def train(spec: SweepSpec, out: Path, pack_size: int = 0, **kwargs: Any) -> list[Any]:
    return sweeps.train(spec, out, pack_size=pack_size, **kwargs)


def summaries(out: Path, name: str = "default") -> dict[str, dict[str, Any]]:
    found = (out / name / "runs").glob("*/summary.json")
    return {p.parent.name: json.loads(p.read_text()) for p in found}


def test_packed_and_one_by_one_agree_on_every_metric(tmp_path: Path) -> None:
    spec = small_spec(
        ("grid.lambda", [0, 0.5, 2]),
        ("grid.anneal", ["none", "linear"]),
        ("free_bits.mode", "batch"),
    )
    train(spec, tmp_path / "packed")
    train(spec, tmp_path / "single", pack_size=1)
    packed, single = summaries(tmp_path / "packed"), summaries(tmp_path / "single")
    assert len(packed) == 6 and packed.keys() == single.keys()
    # On CPU a member's numbers do not depend on its pack: bit for bit.
    for run_id in packed:
        for key in (*METRICS, "kl_per_dim"):
            assert packed[run_id][key] == single[run_id][key], (run_id, key)
    # Different settings really do train differently. (Runs where free bits binds on every
    # dimension share their trajectory: their KL term is a constant, whatever λ and β.)
    elbos = {round(s["test_elbo"], 3) for s in packed.values()}
    assert len(elbos) >= 3


def test_mixed_free_bits_modes_in_one_pack_match_separate_runs(tmp_path: Path) -> None:
    spec = small_spec(
        ("grid.lambda", [0.5]),
        ("grid.mode", ["batch", "example", "total", "group"]),
        ("free_bits.groups", 2),
        ("train.epochs", 1),
    )
    train(spec, tmp_path / "packed")
    train(spec, tmp_path / "single", pack_size=1)
    packed, single = summaries(tmp_path / "packed"), summaries(tmp_path / "single")
    assert len(packed) == 4
    for run_id in packed:
        assert packed[run_id]["test_elbo"] == pytest.approx(single[run_id]["test_elbo"], abs=1e-3)


def test_files_follow_the_layout(tmp_path: Path) -> None:
    spec = small_spec(("grid.lambda", [0, 1]))
    outcomes = train(spec, tmp_path)
    assert sorted(o.state for o in outcomes) == ["done", "done"]
    for folder in (tmp_path / "default" / "runs").iterdir():
        names = {p.name for p in folder.iterdir()}
        assert {
            "config.json",
            "metrics.csv",
            "kl_per_dim.csv",
            "summary.json",
            "samples.npz",
        } <= names
        assert "checkpoint.pt" not in names
        rows = (folder / "metrics.csv").read_text().splitlines()
        assert rows[0].split(",") == list(schema.METRICS_COLUMNS)
        assert [r.split(",")[METRICS_EPOCH] for r in rows[1:]] == ["1", "2"]
        kl_rows = (folder / "kl_per_dim.csv").read_text().splitlines()
        assert kl_rows[0] == ",".join(schema.KL_COLUMNS) and len(kl_rows) == 1 + 2 * 4
        config = json.loads((folder / "config.json").read_text())
        assert config["config"]["free_bits"]["lambda"] in (0.0, 1.0)
        assert {"versions", "device", "git_commit", "setting"} <= config.keys()


def test_free_bits_keeps_units_active(tmp_path: Path) -> None:
    # 3 epochs of batch 32 hold every unit of λ = 2 above 1.7 nats (λ = 0: one below 0.06).
    spec = small_spec(("grid.lambda", [0, 2]), ("train.epochs", 3), ("train.batch_size", 32))
    train(spec, tmp_path)
    by_lambda = {s["lambda"]: s for s in summaries(tmp_path).values()}
    # Below λ = 2 nats a unit's KL costs nothing, so every unit ends up carrying about λ.
    assert min(by_lambda[2.0]["kl_per_dim"]) > 1.0 > min(by_lambda[0.0]["kl_per_dim"])
    assert by_lambda[2.0]["active_units"] >= by_lambda[0.0]["active_units"]
    assert by_lambda[2.0]["test_kl"] > by_lambda[0.0]["test_kl"]


class Interrupt(Exception):
    pass


def test_interrupted_sweep_resumes_to_identical_numbers(tmp_path: Path) -> None:
    spec = small_spec(("grid.lambda", [0, 1]), ("train.epochs", 4), ("eval.iwae_samples", 5))
    train(spec, tmp_path / "straight")

    def stop_after_two(run_ids: Any, epoch: int, epochs: int) -> None:
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(spec, tmp_path / "resumed", on_epoch=stop_after_two)
    plan = executor.plan(spec, tmp_path / "resumed")
    assert {r.state for r in plan.runs} == {"interrupted"}
    assert {r.start_epoch for r in plan.runs} == {2}
    # A torn row, as a kill during a write would leave it, must not survive the resume.
    folder = plan.runs[0].folder
    with open(folder / "metrics.csv", "a") as handle:
        handle.write("lam0-none-s0-xxxxxx,0.0,batch,no")
    train(spec, tmp_path / "resumed")
    straight, resumed = summaries(tmp_path / "straight"), summaries(tmp_path / "resumed")
    for run_id, expected in straight.items():
        for key in (*METRICS, "kl_per_dim", "collapse_epoch"):
            assert resumed[run_id][key] == expected[key], (run_id, key)
        a = (tmp_path / "straight/default/runs" / run_id / "metrics.csv").read_text()
        b = (tmp_path / "resumed/default/runs" / run_id / "metrics.csv").read_text()
        strip = [line.rsplit(",", 1)[0] for line in a.splitlines()]  # all but seconds
        assert strip == [line.rsplit(",", 1)[0] for line in b.splitlines()]


def test_kill_9_mid_sweep_then_resume(tmp_path: Path) -> None:
    """A real SIGKILL of the CLI; the resumed sweep ends with the uninterrupted numbers."""
    args = [
        "--lambdas",
        "0,1",
        "--epochs",
        "4",  # the kill lands after epoch 1's checkpoint: three epochs still to go
        "--set",
        "model.hidden=[32]",
        "--latent-dim",
        "4",
        "--device",
        "cpu",
        "--set",
        "eval.iwae_samples=5",
        "--set",
        "train.batch_size=64",
    ]
    from threads import torch_threads
    from typer.testing import CliRunner

    from freebits_cli.cli import app

    # Only the killed sweep is a process of its own (a process start is most of this test's
    # time); the reference and the resume run the same command line in this one, on one thread
    # as the killed process computes.
    command = [sys.executable, "-m", "freebits_cli", "sweep", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    with torch_threads(1):
        straight = CliRunner().invoke(app, ["sweep", *args, "--out", str(tmp_path / "a")])
    assert straight.exit_code == 0, straight.output
    proc = subprocess.Popen(
        [*command, "--out", str(tmp_path / "b")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        checkpoints = list((tmp_path / "b").glob("default/runs/*/checkpoint.pt"))
        if checkpoints:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "b").glob("default/runs/*/summary.json")), "killed too late"
    with torch_threads(1):
        done = CliRunner().invoke(app, ["sweep", *args, "--out", str(tmp_path / "b")])
    assert done.exit_code == 0, done.output
    a, b = summaries(tmp_path / "a"), summaries(tmp_path / "b")
    assert len(a) == 2
    for run_id in a:
        for key in (*METRICS, "kl_per_dim"):
            assert b[run_id][key] == a[run_id][key], (run_id, key)
        rows = (tmp_path / "b/default/runs" / run_id / "metrics.csv").read_text().splitlines()
        assert [r.split(",")[METRICS_EPOCH] for r in rows[1:]] == [str(e) for e in range(1, 5)]


def test_diverging_member_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from freebits_cli.engine import train as train_module

    real = train_module.free_bits_kl

    def poisoned(kl: torch.Tensor, lam: torch.Tensor, mode: str, groups: int) -> torch.Tensor:
        # Member with λ = 7 gets an infinite loss: its weights go NaN after the first step.
        scale = torch.where(lam == 7, float("inf"), 1.0)
        return real(kl, lam, mode, groups) * scale

    monkeypatch.setattr(train_module, "free_bits_kl", poisoned)
    spec = small_spec(("grid.lambda", [0, 7, 1]), ("train.epochs", 3))
    outcomes = {o.run_id: o for o in train(spec, tmp_path)}
    failed = [o for o in outcomes.values() if o.state == "failed"]
    assert len(failed) == 1 and failed[0].run_id.startswith("lam7-")
    assert "diverged at epoch 1" in failed[0].reason
    folder = tmp_path / "default" / "runs" / failed[0].run_id
    assert json.loads((folder / "failed.json").read_text())["epoch"] == 1
    assert not (folder / "summary.json").exists() and not (folder / "checkpoint.pt").exists()
    assert len(summaries(tmp_path)) == 2
    # The survivors trained exactly as they would have without the failing member.
    monkeypatch.setattr(train_module, "free_bits_kl", real)
    clean = small_spec(("grid.lambda", [0, 1]), ("train.epochs", 3))
    train(clean, tmp_path / "clean")
    for run_id, summary in summaries(tmp_path / "clean").items():
        assert summaries(tmp_path)[run_id]["test_elbo"] == pytest.approx(
            summary["test_elbo"], abs=1e-3
        )


def test_rerun_skips_done_runs_and_adds_new_ones(tmp_path: Path) -> None:
    train(small_spec(("grid.lambda", [0, 1])), tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("default/runs/*/summary.json")}
    plan = executor.plan(small_spec(("grid.lambda", [0, 1, 2])), tmp_path)
    assert sorted(r.state for r in plan.runs) == ["done", "done", "pending"]
    outcomes = train(small_spec(("grid.lambda", [0, 1, 2])), tmp_path)
    assert [o.run_id.split("-")[0] for o in outcomes] == ["lam2"]
    assert before == {p: p.stat().st_mtime_ns for p in before}


def test_collapse_epoch() -> None:
    history = [[1.0, 0.5, 0.001], [0.005, 0.5, 0.001], [0.5, 0.004, 0.002], [0.003, 0.002, 0.0]]
    assert collapse_epochs(history, 0.01) == [4, 3, 1]
    assert collapse_epochs([[1.0]], 0.01) == [None]


def test_burda_learning_rate_staircase() -> None:
    spec = build_spec(None, [("train.lr_schedule", "burda"), ("train.epochs", 3280)])
    run = spec.expand()[0]
    lrs = [learning_rate(run, e) for e in (0, 1, 3, 4, 12, 13)]
    expected = [
        1e-3,
        1e-3 * 10 ** (-1 / 7),
        1e-3 * 10 ** (-1 / 7),
        1e-3 * 10 ** (-2 / 7),
        1e-3 * 10 ** (-2 / 7),
        1e-3 * 10 ** (-3 / 7),
    ]
    assert lrs == pytest.approx(expected)


def test_output_bias_starts_at_the_logit_of_the_mean_pixel(tmp_path: Path) -> None:
    from freebits_cli.data import load_dataset
    from freebits_cli.engine.train import Member, PackTrainer

    run = small_spec(("model.output_bias", "data_mean"), ("train.adam_eps", 1e-4)).expand()[0]
    data = load_dataset(run.dataset)
    trainer = PackTrainer([Member(run, tmp_path, {})], data, torch.device("cpu"))
    mean = torch.from_numpy(data.x_train).mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(trainer.model.to_logits.bias[0, 0], torch.logit(mean))
    assert trainer.optimizer.param_groups[0]["eps"] == 1e-4


def test_static_and_dynamic_binarisation_train_and_are_labelled(tmp_path: Path) -> None:
    spec = small_spec(
        ("grid.lambda", [0]), ("grid.dataset.binarize", ["static", "dynamic"]), ("train.epochs", 1)
    )
    outcomes = train(spec, tmp_path)
    assert [o.state for o in outcomes] == ["done", "done"]
    labels = set()
    for folder in (tmp_path / "default" / "runs").iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        rows = (folder / "metrics.csv").read_text().splitlines()
        binarize = rows[1].split(",")[schema.METRICS_COLUMNS.index("binarize")]
        assert summary["binarize"] == binarize == summary["setting"]["dataset.binarize"]
        labels.add(binarize)
    assert labels == {"static", "dynamic"}
    by_mode = {s["binarize"]: s for s in summaries(tmp_path).values()}
    # Both are scored on the same binarised test set, so their test ELBOs are comparable.
    assert by_mode["static"]["test_elbo"] != by_mode["dynamic"]["test_elbo"]
