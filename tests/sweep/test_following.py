"""Following a sweep: progress off a terminal, step progress and ETA, resume and --force notices."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import sweeps
from rich.console import Console
from typer.testing import CliRunner

from freebits_cli.cli import announce, app
from freebits_cli.cli import progress as cli_progress
from freebits_cli.engine import train as train_module
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep.progress import PackWork, SweepProgress

runner = CliRunner()
TINY = [
    *("--set", "model.hidden=[16]", "--latent-dim", "2", "--device", "cpu"),
    *("--set", "eval.iwae_samples=2", "--set", "eval.samples=2", "--set", "eval.mi=false"),
    *("--set", "train.batch_size=256"),
]
TINY_SPEC: list[tuple[str, Any]] = [
    ("model.hidden", [16]),
    ("model.latent_dim", 2),
    ("train.device", "cpu"),
    ("eval.iwae_samples", 2),
    ("eval.samples", 2),
    ("eval.mi", False),
    ("train.batch_size", 256),
]


pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    pass


def sweep(out: Path, *args: str, **kwargs: Any) -> Any:
    return runner.invoke(app, ["sweep", "--out", str(out), *TINY, *args], **kwargs)


def interrupted(out: Path, epochs: int, stop_at: int, lambdas: list[float]) -> None:
    """A sweep stopped after epoch `stop_at` of `epochs`, as Ctrl-C would leave it."""
    spec = build_spec(None, [*TINY_SPEC, ("train.epochs", epochs), ("grid.lambda", lambdas)])

    def stop(run_ids: Any, epoch: int, total: int) -> None:
        if epoch == stop_at:
            raise Stop

    with pytest.raises(Stop):
        sweeps.run(spec, out, on_epoch=stop)


def test_resume_is_announced_in_the_dry_run_and_the_sweep(tmp_path: Path) -> None:
    interrupted(tmp_path, epochs=3, stop_at=1, lambdas=[0, 1])
    args = ("--lambdas", "0,1,2", "--epochs", "3")
    dry = sweep(tmp_path, *args, "--dry-run", "--no-pilot")
    assert dry.exit_code == 0, dry.output
    assert "3 runs, 3 to train" in dry.output
    assert "resuming 2 runs from epoch 1 (of 3)" in dry.output
    real = sweep(tmp_path, *args)
    assert real.exit_code == 0, real.output
    assert "resuming 2 runs from epoch 1 (of 3)" in real.output
    again = sweep(tmp_path, *args)
    assert "resuming" not in again.output and "nothing to train" in again.output


def test_force_lists_what_it_deletes_and_asks_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sweep(tmp_path, "--name", "logtest", "--lambdas", "0,1", "--epochs", "1")
    assert first.exit_code == 0, first.output
    runs = tmp_path / "logtest" / "runs"
    before = sorted(p.name for p in runs.iterdir())
    lam1 = next(name for name in before if name.startswith("lam1-"))
    # Another epochs count replaces the sweep: both runs are deleted, only λ = 0 is retrained.
    changed = ("--name", "logtest", "--lambdas", "0", "--epochs", "2", "--force")
    dry = sweep(tmp_path, *changed, "--dry-run", "--no-pilot")
    assert dry.exit_code == 0, dry.output
    assert "would delete 2 runs the new spec does not have" in dry.output
    assert all(name in dry.output for name in before)
    assert sorted(p.name for p in runs.iterdir()) == before  # a dry run deletes nothing

    monkeypatch.setattr(announce, "interactive", lambda: True)
    declined = sweep(tmp_path, *changed, input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "Delete 2 runs?" in declined.output and "nothing deleted" in declined.output
    assert sorted(p.name for p in runs.iterdir()) == before

    accepted = sweep(tmp_path, *changed, "--yes")
    assert accepted.exit_code == 0, accepted.output
    assert "Delete" not in accepted.output  # --yes: no question
    assert f"deletes 2 runs the new spec does not have: {before[0]}, {before[1]}" in (
        accepted.output
    )
    after = [p.name for p in runs.iterdir()]
    assert lam1 not in after and len(after) == 1


def test_force_on_the_same_spec_names_the_runs_it_trains_again(tmp_path: Path) -> None:
    first = sweep(tmp_path, "--lambdas", "0,1", "--epochs", "1")
    assert first.exit_code == 0, first.output
    again = sweep(tmp_path, "--lambdas", "0,1", "--epochs", "1", "--force")
    assert again.exit_code == 0, again.output
    assert "--force trains 2 complete runs again from scratch" in again.output
    assert "deletes" not in again.output


# -- progress --------------------------------------------------------------------------------------


def test_progress_lines_reach_a_log_while_the_sweep_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal each epoch's line is written and flushed when the epoch ends, not when the
    sweep stops: what a log file holds while the next epoch trains is read at each commit."""
    monkeypatch.setattr(cli_progress, "LOG_EVERY_S", 0.0)
    seen: list[str] = []
    real = train_module.PackTrainer._commit_epoch

    def commit(self: Any, *args: Any) -> None:
        seen.append(sys.stdout.buffer.getvalue().decode())  # flushed bytes only
        real(self, *args)

    monkeypatch.setattr(train_module.PackTrainer, "_commit_epoch", commit)
    result = sweep(tmp_path, "--lambdas", "0,1", "--epochs", "3", "--pack-size", "1")
    assert result.exit_code == 0, result.output
    assert len(seen) == 6  # 2 packs × 3 epochs
    assert "runs done 0/2 | pack 1/2 (1 run): 1/3 epochs done | eta " in seen[1]
    assert "pack 1/2 (1 run): 2/3 epochs done" in seen[2]
    assert "runs done 1/2 | " in seen[3]  # the first pack's end, before the second one's epoch
    last = [line for line in seen[-1].splitlines() if "epochs done" in line][-1]
    assert re.search(r"eta \d+:\d\d:\d\d$", last), last


def test_step_progress_within_an_epoch_off_and_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "STEP_REPORT_S", 0.0)  # every step reports
    monkeypatch.setattr(cli_progress, "LOG_STALL_S", 0.0)
    monkeypatch.setattr(cli_progress, "LOG_EVERY_S", 1e9)
    result = sweep(tmp_path, "--lambdas", "0", "--epochs", "2")
    assert result.exit_code == 0, result.output
    steps = 6  # digits: 1437 training images, batch 256
    for step in range(1, steps + 1):
        assert f"epoch 1/2, step {step}/{steps}" in result.output
    assert "pack 1/1 (1 run): final evaluation" in result.output

    # On a terminal: the same numbers as bars (rendered into a string here).
    model = SweepProgress([PackWork(("a",), 0, 2, 10.0, 10.0)], jobs=1, clock=FakeClock())
    screen = Console(file=io.StringIO(), force_terminal=True, width=150)
    view = cli_progress.ProgressView(screen, model)
    with view.showing():
        model.on_step(["a"], 0, 0, 12)
        model.clock.now = 10.0  # type: ignore[attr-defined]
        model.on_step(["a"], 0, 6, 12)
        view.update("step")
    shown = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "pack 1/1 (1 run)" in shown and "epoch 1/2, step 6/12" in shown
    assert "0/1  eta 0:00:50" in shown  # (1.5 epochs + the final evaluation) at 0.5 epoch / 10 s


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_eta_counts_the_final_evaluation_and_only_this_process_epochs() -> None:
    clock = FakeClock()
    # Pack 0: fresh, 2 epochs; pack 1: resumed at epoch 4 of 8. Final evaluation = 1 epoch of FLOPs.
    packs = [PackWork(("a",), 0, 2, 100.0, 100.0), PackWork(("b",), 4, 8, 100.0, 100.0)]
    model = SweepProgress(packs, jobs=1, clock=clock)
    assert model.eta() is None  # nothing timed yet
    clock.now = 30.0  # loading data, building the model: not training
    model.on_step(["a"], 0, 0, 10)
    clock.now = 35.0
    model.on_step(["a"], 0, 5, 10)  # half an epoch in 5 s: 10 s per epoch
    # pack 0: 1.5 epochs + final; pack 1: 4 epochs + final -> 7.5 epochs' FLOPs at 10 s each
    assert model.eta() == pytest.approx(75.0)
    clock.now = 40.0
    model.on_epoch(["a"], 1, 2)
    model.on_step(["a"], 1, 0, 10)
    clock.now = 50.0
    model.on_step(["a"], 1, 10, 10)  # the last step: the final evaluation starts
    assert model.active()[0].phase == "final evaluation"
    assert model.eta() == pytest.approx(10.0 + 40.0 + 10.0)
    clock.now = 80.0  # the final evaluation took 30 s: three times the training rate
    model.on_epoch(["a"], 2, 2)
    model.on_pack(["a"], 1)
    assert model.runs_done == 1
    assert model.eta() == pytest.approx(40.0 + 30.0)  # pack 1: 4 epochs, and a measured final
    clock.now = 100.0
    model.on_step(["b"], 4, 0, 10)
    clock.now = 104.0
    model.on_step(["b"], 4, 10, 10)
    clock.now = 105.0
    model.on_epoch(["b"], 5, 8)
    # 3 epochs left at (20 + 5) s / 3 epochs = 25/3 s each, plus the final at its own rate
    assert model.eta() == pytest.approx(3 * 25 / 3 + 30.0)


def test_the_trainer_reports_first_and_last_steps_and_throttles_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = build_spec(None, [*TINY_SPEC, ("train.epochs", 2), ("grid.lambda", [0, 1])])
    steps: list[tuple[str, int, int, int]] = []
    monkeypatch.setattr(train_module, "STEP_REPORT_S", 1e9)  # only the first and last step
    result = sweeps.run(spec, tmp_path, on_step=lambda ids, e, s, n: steps.append((*ids, e, s, n)))
    ids = tuple(sorted(r.run.run_id for r in result.plan.runs))
    assert steps == [(*ids, e, s, 6) for e in (0, 1) for s in (0, 6)]


# -- λ = 0 across free-bits modes ------------------------------------------------------------------


def test_lambda_0_is_trained_once_across_free_bits_modes(tmp_path: Path) -> None:
    spec = build_spec(None, [("grid.lambda", [0, 1]), ("grid.mode", ["batch", "example"])])
    runs = spec.expand()
    assert sorted((r.free_bits.lam, r.free_bits.mode) for r in runs) == [
        (0, "batch"),
        (1, "batch"),
        (1, "example"),
    ]
    dry = sweep(tmp_path, "--lambdas", "0,1", "--free-bits-mode", "batch,example", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "3 runs, 3 to train" in dry.output
    assert "λ = 0 is the plain VAE in every free-bits mode" in dry.output
    assert "modes batch, example, trained once" in dry.output
    # Why sharing is right: at λ = 0 both modes train the same model (to float rounding).
    elbo = {}
    for mode in ("batch", "example"):
        one = build_spec(
            None, [*TINY_SPEC, ("train.epochs", 1), ("free_bits.mode", mode), ("grid.lambda", [0])]
        )
        (outcome,) = sweeps.train(one, tmp_path / mode)
        elbo[mode] = outcome.summary["test_elbo"]
    assert elbo["batch"] == pytest.approx(elbo["example"], abs=1e-4)


def test_eta_with_no_final_evaluation_after_a_finished_pack() -> None:
    """IWAE and MI off: a finished pack's final evaluation has no FLOPs; the ETA of the next
    pack still comes from the training rate (it divided by a zero rate)."""
    clock = FakeClock()
    packs = [PackWork(("a",), 0, 1, 100.0, 0.0), PackWork(("b",), 0, 1, 100.0, 0.0)]
    model = SweepProgress(packs, jobs=1, clock=clock)
    model.on_step(["a"], 0, 0, 10)
    clock.now = 10.0
    model.on_step(["a"], 0, 10, 10)
    clock.now = 11.0
    model.on_epoch(["a"], 1, 1)
    model.on_pack(["a"], 1)
    clock.now = 12.0
    model.on_step(["b"], 0, 0, 10)
    clock.now = 17.0
    model.on_step(["b"], 0, 5, 10)
    assert model.eta() == pytest.approx(5.0)  # half an epoch left at 10 s per epoch
