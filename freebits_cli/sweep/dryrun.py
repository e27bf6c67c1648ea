"""What `--dry-run` tells: each pack, where it goes, its memory and its estimated time.

Time = the pack's training FLOPs (`cost.pack_flops_parts`) divided by the FLOP rate of a pilot of
real training steps of the same packed model on the chosen device, plus its evaluation FLOPs
divided by the rate of forward-only evaluation chunks (`cost.pilot_flop_rate`, each timed in
rounds until the rate is stable); without a pilot only the FLOPs are given. Small models are bound
by per-step overheads rather than FLOPs, which the pilot's measured rate already includes (it is a
rate of whole steps, not a peak).

The estimate comes with a range: the pilot's slowest and fastest rounds, widened by how far
estimates have been from real sweeps (`ACTUAL_OVER_ESTIMATE`, measured by
benchmarks/estimate.py on images and text, see docs/benchmarks.md). Other work that starts on the
machine after the pilot lengthens a sweep beyond any range the pilot can see.
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
    from freebits_cli.sweep.run import Planned
    from freebits_cli.sweep.runs import PlannedRun


#: Actual / estimated time over the sweeps of benchmarks/estimate.py (lowest, highest), which
#: widens the pilot's own spread into the range the estimate states.
ACTUAL_OVER_ESTIMATE = (0.6, 1.7)


@dataclass(frozen=True)
class PackEstimate:
    index: int
    run_ids: tuple[str, ...]
    start_epoch: int
    where: str
    memory_bytes: int
    flops: float
    seconds: float | None  # None without a pilot
    low: float | None = None  # the range of `seconds` (see ACTUAL_OVER_ESTIMATE)
    high: float | None = None


@dataclass(frozen=True)
class SweepEstimate:
    packs: tuple[PackEstimate, ...]
    pilot_device: str | None
    wall_seconds: float | None  # with `workers` packs at a time
    total_seconds: float | None  # device time summed over packs
    wall_low: float | None = None  # the range of wall_seconds
    wall_high: float | None = None
    pilot_spread: float | None = None  # the largest spread of a pilot's rounds (fast-slow)/rate

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.packs)


def estimate(
    packs: Sequence[Sequence[PlannedRun]],
    where: Sequence[str],
    dataset: Callable[[DatasetSpec], Dataset],
    pilot_device: str | None,
    workers: int,
    threads: int = 0,
) -> SweepEstimate:
    """Estimate every pack; `where[i]` says where pack i goes; `workers` packs run at once, each
    with `threads` torch threads on the CPU (0: this process's count)."""
    rates: dict[Any, cost.PilotRate] = {}
    out = []
    for i, pack in enumerate(packs):
        run = pack[0].run
        data = dataset(run.dataset)
        n_train, n_test = len(data.x_train), len(data.x_test)
        memory = cost.estimate_memory(run, data.image_shape, n_train, n_test, data.vocab_size)
        remaining = run.train.epochs - pack[0].start_epoch
        parts = cost.pack_flops_parts(run, memory.parameters, len(pack), n_train, n_test)
        train, evaluation = (f * remaining / max(1, run.train.epochs) for f in parts)
        flops = train + evaluation
        seconds = low = high = None
        if pilot_device is not None:
            key = (run.model, run.train.batch_size, len(pack), data.image_shape)
            if key not in rates:
                rates[key] = cost.pilot_flop_rate(
                    run, data.image_shape, len(pack), pilot_device, data.vocab_size, threads
                )
            rate = rates[key]
            seconds = rate.seconds(train, evaluation)
            low = rate.seconds(train, evaluation, rate.fast) * ACTUAL_OVER_ESTIMATE[0]
            high = rate.seconds(train, evaluation, rate.slow) * ACTUAL_OVER_ESTIMATE[1]
        out.append(
            PackEstimate(
                i,
                tuple(p.run.run_id for p in pack),
                pack[0].start_epoch,
                where[i],
                memory.total(len(pack)),
                flops,
                seconds,
                low,
                high,
            )
        )
    if pilot_device is None:
        return SweepEstimate(tuple(out), None, None, None)
    slots = max(1, workers)
    return SweepEstimate(
        tuple(out),
        pilot_device,
        wall_seconds=_makespan([p.seconds or 0.0 for p in out], slots),
        total_seconds=sum(p.seconds or 0.0 for p in out),
        wall_low=_makespan([p.low or 0.0 for p in out], slots),
        wall_high=_makespan([p.high or 0.0 for p in out], slots),
        pilot_spread=max((r.spread for r in rates.values()), default=0.0),
    )


def estimate_planned(p: Planned, pilot: bool = True) -> tuple[SweepEstimate, int]:
    """The estimate of a planned sweep (`run_sweep`'s `Planned`) where its options send it, and
    how many packs train at once there; the pilot runs on the device and threads packs get."""
    from freebits_cli.sweep import executor

    o, threads = p.options, 0
    if o.executor == "local":
        where = where_local(len(p.packs), p.devices, p.jobs, o.shard)
        pilot_device, workers = p.devices[0], p.jobs
        threads = p.choice.threads if p.choice is not None else 0
    else:
        where = where_slurm(len(p.packs), p.spec.slurm.max_array_size)
        pilot_device = executor.resolve_devices("auto")[0]
        workers = p.spec.slurm.array_parallelism
    device = pilot_device if pilot else None
    return estimate(p.packs, where, executor.dataset, device, workers, threads), workers


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
    piloted = est.total_seconds is not None
    title = "packs (time: FLOPs / a measured pilot step's rate)" if piloted else "packs"
    table = Table(title=title)
    columns = ["pack", "runs", "from epoch", "where", "memory", "FLOPs"]
    for column in columns + (["est. time", "range"] if piloted else []):
        table.add_column(column)
    for p in est.packs:
        ids = (
            ", ".join(p.run_ids) if len(p.run_ids) <= 3 else f"{p.run_ids[0]} … ({len(p.run_ids)})"
        )
        cells = [
            str(p.index),
            ids,
            str(p.start_epoch),
            p.where,
            f"{p.memory_bytes / 2**30:.2f} GiB",
            human_flops(p.flops),
        ]
        if piloted:
            cells += [human_seconds(p.seconds), f"{human_range(p.low, p.high)}"]
        table.add_row(*cells)
    if not piloted:
        return table, f"sweep: {human_flops(est.flops)} (no pilot: no time estimate)"
    return table, (
        f"sweep: {human_flops(est.flops)}; estimated {human_seconds(est.wall_seconds)} wall "
        f"(likely {human_range(est.wall_low, est.wall_high)}) with {workers} pack(s) at a time, "
        f"{human_seconds(est.total_seconds)} of device time (pilot on {est.pilot_device}, its "
        f"rounds within ±{50 * (est.pilot_spread or 0):.0f}%; the range adds the error of past "
        "estimates; other work starting on the machine lengthens it)"
    )


def human_range(low: float | None, high: float | None) -> str:
    return f"{human_seconds(low)}–{human_seconds(high)}"


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
