"""What `--dry-run` tells: each pack, where it goes, its memory and its estimated time.

Time = the pack's FLOP count (`cost.pack_flops`) divided by the FLOP rate of a short pilot of real
training steps of the same packed model on the chosen device (`cost.pilot_flop_rate`); without a
pilot only the FLOPs are given. Small models are bound by per-step overheads rather than FLOPs, which
the pilot's measured rate already includes (it is a rate of whole steps, not a peak).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.table import Table

from freebits_cli.sweep import cost

if TYPE_CHECKING:
    from freebits_cli.data import Dataset
    from freebits_cli.spec import DatasetSpec
    from freebits_cli.sweep.runs import PlannedRun


@dataclass(frozen=True)
class PackEstimate:
    index: int
    run_ids: tuple[str, ...]
    start_epoch: int
    where: str
    memory_bytes: int
    flops: float
    seconds: float | None  # None without a pilot


@dataclass(frozen=True)
class SweepEstimate:
    packs: tuple[PackEstimate, ...]
    pilot_device: str | None
    wall_seconds: float | None  # with `workers` packs at a time
    total_seconds: float | None  # device time summed over packs

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.packs)


def estimate(
    packs: Sequence[Sequence[PlannedRun]],
    where: Sequence[str],
    dataset: Callable[[DatasetSpec], Dataset],
    pilot_device: str | None,
    workers: int,
) -> SweepEstimate:
    """Estimate every pack; `where[i]` says where pack i goes; `workers` packs run at once."""
    rates: dict[Any, float] = {}
    out = []
    for i, pack in enumerate(packs):
        run = pack[0].run
        data = dataset(run.dataset)
        n_train, n_test = len(data.x_train), len(data.x_test)
        memory = cost.estimate_memory(run, data.image_shape, n_train, n_test, data.vocab_size)
        remaining = run.train.epochs - pack[0].start_epoch
        full = cost.pack_flops(run, memory.parameters, len(pack), n_train, n_test)
        flops = full * remaining / max(1, run.train.epochs)
        seconds = None
        if pilot_device is not None:
            key = (run.model, run.train.batch_size, len(pack), data.image_shape)
            if key not in rates:
                rates[key] = cost.pilot_flop_rate(
                    run, data.image_shape, len(pack), pilot_device, data.vocab_size
                )
            seconds = flops / rates[key]
        out.append(
            PackEstimate(
                i,
                tuple(p.run.run_id for p in pack),
                pack[0].start_epoch,
                where[i],
                memory.total(len(pack)),
                flops,
                seconds,
            )
        )
    times = [p.seconds for p in out if p.seconds is not None]
    total = sum(times) if pilot_device is not None else None
    wall = None
    if total is not None:
        wall = _makespan(times, max(1, workers))
    return SweepEstimate(tuple(out), pilot_device, wall, total)


def _makespan(times: Sequence[float], workers: int) -> float:
    """Wall time when `workers` slots each take the next pack from a queue, in order."""
    slots = [0.0] * workers
    for t in times:
        slots[slots.index(min(slots))] += t
    return max(slots, default=0.0)


def where_local(count: int, devices: Sequence[str], jobs: int, shard: str | None) -> list[str]:
    """Where local packs go: one device slot per worker (packs pulled from a queue)."""
    suffix = f", shard {shard}" if shard else ""
    if jobs <= 1:
        return [f"{devices[i % len(devices)]} (in process{suffix})" for i in range(count)]
    return [
        f"{devices[i % jobs % len(devices)]} (worker {i % jobs} of {jobs}{suffix})"
        for i in range(count)
    ]


def where_slurm(count: int, max_array_size: int) -> list[str]:
    return [f"array {i // max_array_size} task {i % max_array_size}" for i in range(count)]


def render(est: SweepEstimate, workers: int) -> tuple[Table, str]:
    """The packs as a table, and the sweep's total as a line."""
    table = Table(title="packs (time: FLOPs / a measured pilot step's rate)")
    for column in ("pack", "runs", "from epoch", "where", "memory", "FLOPs", "est. time"):
        table.add_column(column)
    for p in est.packs:
        ids = (
            ", ".join(p.run_ids) if len(p.run_ids) <= 3 else f"{p.run_ids[0]} … ({len(p.run_ids)})"
        )
        table.add_row(
            str(p.index),
            ids,
            str(p.start_epoch),
            p.where,
            f"{p.memory_bytes / 2**30:.2f} GiB",
            human_flops(p.flops),
            human_seconds(p.seconds),
        )
    if est.total_seconds is None:
        return table, f"sweep: {human_flops(est.flops)} (no pilot: no time estimate)"
    return table, (
        f"sweep: {human_flops(est.flops)}; estimated {human_seconds(est.wall_seconds)} wall with "
        f"{workers} pack(s) at a time, {human_seconds(est.total_seconds)} of device time "
        f"(pilot on {est.pilot_device})"
    )


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def human_flops(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.1f} {unit}"
    return f"{flops / 1e6:.1f} MFLOP"
