"""The dry run's time estimate: a pilot timed in rounds until its rate is stable, on the threads
the packs will train with, and an estimate that states its range (or, without a pilot, no time)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.sweep import cores, cost, dryrun, trainers

runner = CliRunner()


class FakeClock:
    """A clock that only moves when a step runs, by the step's given duration."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = durations
        self.steps = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.durations[min(self.steps, len(self.durations) - 1)]
        self.steps += 1


def test_a_burst_in_the_first_round_is_timed_again_until_rounds_agree() -> None:
    # The first 3 steps are slowed ten times by other work; then the machine is quiet.
    clock = FakeClock([1.0] * 3 + [0.1])
    rounds = cost._timed_rounds(clock.step, clock)
    assert rounds[0] == pytest.approx(1.0)
    assert len(rounds) == 1 + cost.PILOT_ROUNDS  # the burst, then three rounds that agree
    assert rounds[-cost.PILOT_ROUNDS :] == pytest.approx([0.1] * cost.PILOT_ROUNDS)


def test_a_rate_that_never_settles_stops_at_the_time_limit() -> None:
    durations = [0.05 if i % 7 < 3 else 0.2 for i in range(10_000)]  # alternating load
    clock = FakeClock(durations)
    rounds = cost._timed_rounds(clock.step, clock)
    assert clock.now >= cost.PILOT_MAX_S and clock.now < cost.PILOT_MAX_S + 2 * cost.PILOT_ROUND_S
    assert not cost._agree(rounds[-cost.PILOT_ROUNDS :])


def test_the_choices_pilot_alternates_thread_counts_and_stops_soon() -> None:
    """Rounds at one thread and at every core alternate, so a burst of other work slows both
    alike (here the second count's rounds are twice as fast throughout), torch's threads are
    restored, and rounds that never settle stop at the choice's limit, well before the
    estimate's."""
    import torch

    own = torch.get_num_threads()
    seen: list[int] = []
    clock = FakeClock([0.0])

    def step() -> None:
        seen.append(torch.get_num_threads())
        clock.now += 0.02 if torch.get_num_threads() == 1 else 0.01

    rounds = cost._alternating_rounds(step, (1, 2), clock)
    assert torch.get_num_threads() == own
    assert rounds[1] == pytest.approx([0.02] * cost.PILOT_ROUNDS)
    assert rounds[2] == pytest.approx([0.01] * cost.PILOT_ROUNDS)
    assert seen[: cost.PILOT_STEPS] == [1] * cost.PILOT_STEPS and 2 in seen  # in turns
    noisy = FakeClock([0.05 if i % 7 < 3 else 0.2 for i in range(10_000)])  # never settles
    cost._alternating_rounds(noisy.step, (1, 2), noisy)
    assert cost.CHOICE_MAX_S <= noisy.now < cost.PILOT_MAX_S / 2


def test_the_pilot_reports_its_spread_and_restores_torchs_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from freebits_cli.spec.files import build_spec

    (run,) = build_spec(None, [("grid.lambda", [0]), ("model.hidden", [8])]).expand()
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    during: list[int] = []
    timed = cost._timed_rounds

    def watched(step, clock=None):  # type: ignore[no-untyped-def]
        during.append(torch.get_num_threads())
        return timed(step)

    monkeypatch.setattr(cost, "_timed_rounds", watched)
    rate = cost.pilot_flop_rate(run, (64,), 2, "cpu", threads=wanted)
    assert during == [wanted, wanted] and torch.get_num_threads() == before  # train, evaluate
    assert rate.eval_rate > 0
    assert rate.slow <= rate.rate <= rate.fast and rate.rounds >= cost.PILOT_ROUNDS
    assert rate.spread == pytest.approx((rate.fast - rate.slow) / rate.rate)


def test_the_pilot_times_with_the_threads_each_worker_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []

    def fake_pilot(run, shape, members, device, vocab_size=0, threads=0):  # type: ignore[no-untyped-def]
        asked.append(threads)
        return cost.PilotRate(rate=1e9, slow=0.8e9, fast=1.25e9, rounds=3, stable=True)

    monkeypatch.setattr(cost, "pilot_flop_rate", fake_pilot)
    monkeypatch.setattr(cores, "machine", lambda threads=0: cores.Cores(4, "affinity"))
    monkeypatch.setattr(trainers, "others", lambda: [])  # no other freebits trainer here
    args = ["sweep", "--dry-run", "--device", "cpu", "--out", str(tmp_path)]
    two = runner.invoke(app, [*args, "--jobs", "2", "--pack-size", "2"])
    assert two.exit_code == 0, two.output
    assert asked and set(asked) == {2}  # 4 cores, 2 workers: 2 threads each
    asked.clear()
    one = runner.invoke(app, [*args, "--jobs", "1"])
    assert one.exit_code == 0 and set(asked) == {4}  # in process: every core


def test_the_estimate_states_its_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cost,
        "pilot_flop_rate",
        lambda *a, **k: cost.PilotRate(rate=1e9, slow=0.9e9, fast=1.1e9, rounds=3, stable=True),
    )
    result = runner.invoke(app, ["sweep", "--dry-run", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "est. time" in text and "range" in text and "likely" in text, text
    assert "rounds within ±10%" in text  # (1.1 - 0.9) / 1.0 / 2


def test_estimate_range_brackets_the_estimate() -> None:
    from freebits_cli.spec.files import build_spec
    from freebits_cli.sweep import executor
    from freebits_cli.sweep.runs import PlannedRun

    runs = build_spec(None, [("grid.lambda", [0, 1]), ("model.hidden", [8])]).expand()
    packs = [[PlannedRun(run, Path("x"), "pending", 0)] for run in runs]
    real = cost.pilot_flop_rate
    try:  # evaluation chunks run ten times the training steps' rate
        cost.pilot_flop_rate = lambda *a, **k: cost.PilotRate(1e9, 0.5e9, 2e9, 3, False, 1e10)  # type: ignore[assignment]
        est = dryrun.estimate(packs, ["cpu", "cpu"], executor.dataset, "cpu", 1)
    finally:
        cost.pilot_flop_rate = real  # type: ignore[assignment]
    data = executor.dataset(runs[0].dataset)
    params = cost.count_parameters(runs[0].model, data.image_shape)
    train, evaluation = cost.pack_flops_parts(
        runs[0], params, 1, len(data.x_train), len(data.x_test)
    )
    assert evaluation > 0 and est.flops == pytest.approx(2 * (train + evaluation))
    one = train / 1e9 + evaluation / 1e10
    lo, hi = dryrun.ACTUAL_OVER_ESTIMATE
    assert est.wall_seconds == pytest.approx(2 * one)  # two packs, one after the other
    assert est.wall_low == pytest.approx(2 * one / 2 * lo)
    assert est.wall_high == pytest.approx(2 * one * 2 * hi)
    assert est.pilot_spread == pytest.approx(1.5)


def test_no_pilot_no_time_in_the_title(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["sweep", "--dry-run", "--no-pilot", "--device", "cpu", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "packs" in result.output and "pilot step" not in result.output
    assert "est. time" not in result.output and "no time estimate" in result.output
