"""The sweep's progress as it trains: live bars on a terminal, plain flushed lines in a log.

On a terminal: runs done with the time left, and a bar per pack in training that moves with its
steps. Anywhere else (a file, a pipe, a Slurm log, CI), a line at the end of a pack's epoch or of
a pack, at most one every LOG_EVERY_S seconds, and one mid-epoch when an epoch runs for longer
than LOG_STALL_S; each is flushed as it is written.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from freebits_cli.sweep.progress import PackState, SweepProgress
from freebits_cli.sweep.runs import Callbacks

#: Least seconds between two progress lines off a terminal (epoch or pack ends).
LOG_EVERY_S = 10.0
#: Least seconds between two lines when no epoch ends (a long epoch: its step count).
LOG_STALL_S = 60.0


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    return str(datetime.timedelta(seconds=round(seconds)))


def pack_text(p: PackState, count: int) -> str:
    runs = len(p.work.run_ids)
    where = f"pack {p.index + 1}/{count} ({runs} run{'' if runs == 1 else 's'})"
    if p.phase == "final evaluation":
        return f"{where}: final evaluation"
    if not p.step:  # between two epochs
        return f"{where}: {p.epoch}/{p.work.epochs} epochs done"
    return f"{where}: epoch {p.epoch + 1}/{p.work.epochs}, step {p.step}/{p.steps}"


class ProgressView:
    """Shows a SweepProgress on `say`; call `update(kind)` after each callback."""

    def __init__(self, say: Console, model: SweepProgress) -> None:
        self.say = say
        self.model = model
        self.terminal = say.is_terminal
        self._last_line: float | None = None
        self._bars: Progress | None = None
        self._runs: TaskID | None = None
        self._pack_tasks: dict[int, TaskID] = {}

    @contextmanager
    def showing(self) -> Iterator[ProgressView]:
        if not self.terminal:
            yield self
            return
        columns = (
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[info]}", markup=False),
        )
        with Progress(*columns, console=self.say, transient=False) as bars:
            self._bars = bars
            self._runs = bars.add_task("runs done", total=self.model.runs_total, info="")
            self.update("start")
            yield self
            self.update("end")
        self._bars = None

    def update(self, kind: str) -> None:
        """`kind`: start, step, epoch, pack or end."""
        if self._bars is not None:
            self._refresh_bars()
            return
        now, last = self.model.clock(), self._last_line
        if kind == "step":  # mid-epoch: only when nothing was said for a long while
            due = now - (self.model.started if last is None else last) >= LOG_STALL_S
        else:
            due = kind in ("epoch", "pack") and (last is None or now - last >= LOG_EVERY_S)
        if due:
            self._last_line = now
            self.say.print(self.line(), highlight=False, soft_wrap=True)

    def line(self) -> str:
        m = self.model
        parts = [f"[{clock_text(m.elapsed())}] runs done {m.runs_done}/{m.runs_total}"]
        parts += [pack_text(p, len(m.packs)) for p in m.active()]
        parts.append(f"eta {clock_text(m.eta())}")
        return " | ".join(parts)

    def _refresh_bars(self) -> None:
        bars, m = self._bars, self.model
        assert bars is not None and self._runs is not None
        eta = clock_text(m.eta())
        info = f"{m.runs_done}/{m.runs_total}  eta {eta}"
        bars.update(self._runs, completed=m.runs_done, info=info)
        active = {p.index: p for p in m.active()}
        for index, task in list(self._pack_tasks.items()):
            if index not in active:
                bars.remove_task(task)
                del self._pack_tasks[index]
        for index, p in active.items():
            if index not in self._pack_tasks:
                self._pack_tasks[index] = bars.add_task("", total=p.work.epochs, info="")
            bars.update(
                self._pack_tasks[index],
                description=pack_text(p, len(m.packs)).split(": ")[0],
                completed=min(p.epoch + p.fraction, p.work.epochs),
                info=pack_text(p, len(m.packs)).split(": ")[1],
            )


def callbacks(view: ProgressView) -> Callbacks:
    """`run_sweep`'s progress callbacks, feeding `view`."""
    model = view.model

    def on_step(run_ids: Sequence[str], epoch: int, step: int, steps: int) -> None:
        model.on_step(run_ids, epoch, step, steps)
        view.update("step")

    def on_epoch(run_ids: Sequence[str], epoch: int, epochs: int) -> None:
        model.on_epoch(run_ids, epoch, epochs)
        view.update("epoch")

    def on_pack(outcomes: Sequence[Any]) -> None:
        finished = sum(o.state != "busy" for o in outcomes)
        model.on_pack([o.run_id for o in outcomes], finished)
        view.update("pack")

    return Callbacks(on_epoch=on_epoch, on_step=on_step, on_pack=on_pack)
