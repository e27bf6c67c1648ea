"""How far a sweep has come and how long the rest will take, from the trainer's callbacks.

Work is counted in FLOPs (`cost`, the dry run's model): each pack's epochs (training and the
per-epoch evaluation) and its final evaluation (IWAE bound, mutual information). Rates come only
from what this process has timed — epochs resumed from a checkpoint count neither as work done
nor as time spent — and the final evaluation is timed apart from training, since it runs at
another FLOP rate (no backward pass, float64 sums); until one has been timed, its FLOPs at the
training rate stand in for it. This module only keeps the numbers; the command line shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PackWork:
    """What one pack has to do: its epochs from `start_epoch` on, then its final evaluation."""

    run_ids: tuple[str, ...]
    start_epoch: int
    epochs: int
    epoch_flops: float  # one epoch of the whole pack: training and the per-epoch evaluation
    final_flops: float  # the final evaluation's extra FLOPs (IWAE, MI), whole pack


@dataclass
class PackState:
    work: PackWork
    index: int
    epoch: int  # epochs complete
    step: int = 0  # steps done in the epoch in progress
    steps: int = 0
    phase: str = "waiting"  # waiting | training | final evaluation | done
    epoch_started: float | None = None
    train_ended: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the epoch in progress that is trained."""
        return self.step / self.steps if self.phase == "training" and self.steps else 0.0


def pack_work(packs: Sequence[Sequence[Any]]) -> list[PackWork]:
    """The work of each pack (lists of PlannedRun), from the cost model."""
    from freebits_cli.sweep import cost
    from freebits_cli.sweep.runs import dataset

    out = []
    for pack in packs:
        run = pack[0].run
        data = dataset(run.dataset)
        params = cost.count_parameters(run.model, data.image_shape, data.vocab_size)
        n_train, n_test = len(data.x_train), len(data.x_test)
        every = cost.eval_flops(run, params, n_test, final=False)
        epoch = cost.train_flops(params, n_train) + every
        final = cost.eval_flops(run, params, n_test, final=True) - every
        start = pack[0].start_epoch if pack[0].state == "interrupted" else 0
        ids = tuple(p.run.run_id for p in pack)
        out.append(PackWork(ids, start, run.train.epochs, len(pack) * epoch, len(pack) * final))
    return out


class SweepProgress:
    """Runs done, each pack's epoch and step, and the time left, updated by the callbacks."""

    def __init__(
        self, packs: Sequence[PackWork], jobs: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.packs = [PackState(p, i, p.start_epoch) for i, p in enumerate(packs)]
        self._by_id = {rid: state for state in self.packs for rid in state.work.run_ids}
        self.runs_total = sum(len(p.run_ids) for p in packs)
        self.runs_done = 0
        self.jobs = max(1, jobs)
        self.clock = clock
        self.started = clock()
        # Timed in this process: epoch FLOPs and seconds, final-evaluation FLOPs and seconds.
        self._epoch = [0.0, 0.0]
        self._final = [0.0, 0.0]

    def _pack(self, run_ids: Sequence[str]) -> PackState | None:
        return next((self._by_id[r] for r in run_ids if r in self._by_id), None)

    # -- the trainer's callbacks ---------------------------------------------------------------

    def on_step(self, run_ids: Sequence[str], epoch: int, step: int, steps: int) -> None:
        pack = self._pack(run_ids)
        if pack is None:
            return
        now = self.clock()
        if step == 0 or pack.epoch_started is None:
            pack.epoch_started, pack.train_ended = now, None
        pack.epoch, pack.step, pack.steps, pack.phase = epoch, step, steps, "training"
        if step == steps and epoch + 1 == pack.work.epochs:
            pack.train_ended, pack.phase = now, "final evaluation"

    def on_epoch(self, run_ids: Sequence[str], epoch: int, epochs: int) -> None:
        pack = self._pack(run_ids)
        if pack is None:
            return
        now = self.clock()
        if pack.epoch_started is not None:
            if pack.train_ended is not None:  # the final epoch: training, then the evaluation
                self._add(self._epoch, pack.work.epoch_flops, pack.train_ended - pack.epoch_started)
                self._add(self._final, pack.work.final_flops, now - pack.train_ended)
            else:
                self._add(self._epoch, pack.work.epoch_flops, now - pack.epoch_started)
        pack.epoch, pack.step, pack.epoch_started, pack.train_ended = epoch, 0, None, None
        pack.phase = "training"  # until `on_pack`: after the last epoch, writing its results

    def on_pack(self, run_ids: Sequence[str], finished: int) -> None:
        self.runs_done += finished
        pack = self._pack(run_ids)
        if pack is not None:
            pack.phase = "done"

    @staticmethod
    def _add(total: list[float], flops: float, seconds: float) -> None:
        total[0] += flops
        total[1] += max(seconds, 0.0)

    # -- what to show ----------------------------------------------------------------------------

    def active(self) -> list[PackState]:
        return [p for p in self.packs if p.phase in ("training", "final evaluation")]

    def elapsed(self) -> float:
        return self.clock() - self.started

    def eta(self) -> float | None:
        """Seconds until every pack is done, or None before anything has been timed."""
        now = self.clock()
        flops, seconds = self._epoch
        for p in self.active():  # the epochs in progress count as far as they have come
            if p.epoch_started is None:
                continue
            if p.phase == "training":
                flops += p.work.epoch_flops * p.fraction
                seconds += now - p.epoch_started
            elif p.train_ended is not None:
                flops += p.work.epoch_flops
                seconds += p.train_ended - p.epoch_started
        if flops <= 0 or seconds <= 0:
            return None
        rate = flops / seconds
        # A final evaluation of no FLOPs (IWAE and MI off) says nothing of the rate: keep training's.
        final_rate = self._final[0] / self._final[1] if min(self._final) > 0 else rate
        left, busy = 0.0, 0
        for p in self.packs:
            if p.phase == "done":
                continue
            busy += 1
            if p.phase == "final evaluation" and p.train_ended is not None:
                spent = now - p.train_ended
                left += max(p.work.final_flops / final_rate - spent, 0.0)
                continue
            epochs_left = p.work.epochs - p.epoch - p.fraction
            if epochs_left <= 0:
                continue  # evaluated; its summary is being written
            left += epochs_left * p.work.epoch_flops / rate + p.work.final_flops / final_rate
        return left / max(1, min(self.jobs, busy))
