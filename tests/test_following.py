"""Following a sweep: progress off a terminal, step progress and ETA, resume and --force notices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freebits_cli import executor
from freebits_cli.cli import announce, app
from freebits_cli.spec_file import build_spec

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


class Stop(Exception):
    pass


def sweep(out: Path, *args: str, **kwargs: Any) -> Any:
    return runner.invoke(app, ["sweep", "--out", str(out), *TINY, *args], **kwargs)


def interrupted(out: Path, epochs: int, stop_at: int, lambdas: list[float]) -> None:
    """A sweep stopped after epoch `stop_at` of `epochs`, as Ctrl-C would leave it."""
    spec = build_spec(None, [*TINY_SPEC, ("train.epochs", epochs), ("grid.lambda", lambdas)])
    plan = executor.plan(spec, out)
    executor.prepare(plan, spec)

    def stop(run_ids: Any, epoch: int, total: int) -> None:
        if epoch == stop_at:
            raise Stop

    with pytest.raises(Stop):
        executor.execute(plan, "cpu", on_epoch=stop)


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
