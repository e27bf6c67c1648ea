"""Decide what to train and where: skip complete runs, resume interrupted ones, form packs, place them.

Runs that may share one batched model (same data, architecture and optimisation settings, same
epoch to resume from) are grouped into packs of at most `pack_size` and of what the device's memory
holds (`cost`); packs run one after another in this process (`jobs=1`, with per-epoch progress) or
in `jobs` worker processes, one per device slot (`workers`); on a CPU `choose` decides how many
workers of how many threads, from the cores the sweep may use (`cores`, `trainers`); `cluster`
submits them to Slurm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli import schema
from freebits_cli.errors import ResultsError, SpecError
from freebits_cli.results import locks, resume, storage
from freebits_cli.spec import RunConfig, SweepSpec
from freebits_cli.spec.files import dump_spec
from freebits_cli.sweep import cores, cost, pretrain, trainers
from freebits_cli.sweep.pack_runner import train_pack
from freebits_cli.sweep.runs import Callbacks, Plan, PlannedRun, dataset

if TYPE_CHECKING:  # torch is imported only when training starts
    from freebits_cli.engine.train import Outcome

__all__ = ["Plan", "PlannedRun", "dataset", "train_pack"]

MAX_AUTO_PACK = 64
#: Worker processes the CPU packs are first formed for when --jobs is not given; `choose` then
#: decides how they train (docs/scale-out.md, "Every core of a CPU").
DEFAULT_CPU_JOBS = 1


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SpecError("--shard", f"{text!r} must look like I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise SpecError("--shard", f"{text!r} needs 0 <= I < N")
    return index, count


def resolve_devices(device: str) -> list[str]:
    """`auto` -> every visible GPU when there is one, else cpu; `cuda` -> every visible GPU
    (CUDA_VISIBLE_DEVICES decides which are visible); a comma list -> its members."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices = device.split(",")
    if any(d.startswith("cuda") for d in devices):
        if not torch.cuda.is_available():
            raise SpecError("train.device", f"{device!r} asked for CUDA, but none is available")
        for d in devices:
            if ":" in d and int(d.split(":")[1]) >= torch.cuda.device_count():
                raise SpecError(
                    "train.device",
                    f"{d} does not exist ({torch.cuda.device_count()} CUDA device(s) found)",
                )
    return devices


def _run_folder(sweep: Path, run: RunConfig) -> Path:
    try:
        return storage.run_dir(sweep, run.run_id)
    except ResultsError:
        # Only λ is printed with a free format in the run id (1e+06 has a '+'): name the field.
        raise SpecError(
            "free_bits.lambda",
            f"{run.free_bits.lam!r} makes the run id {run.run_id!r}, not a safe folder name; "
            "use a λ below 1e6 nats",
        ) from None


def plan(spec: SweepSpec, results: Path, force: bool = False, shard: str | None = None) -> Plan:
    """What each run of the spec needs, read from its folder (without locks: advisory; the
    trainer decides again under the run's lock); and the pretrainings of those not done."""
    index, count = parse_shard(shard)
    sweep = storage.sweep_dir(results, spec.name)
    runs = sorted(spec.expand(), key=lambda r: r.run_id)[index::count]
    warnings: list[str] = []
    planned = _planned(runs, [_run_folder(sweep, run) for run in runs], force, warnings)
    todo = [item.run for item in planned if item.state != "done"]
    pretrainings = pretrain.needed(todo)
    folders = [pretrain.folder_of(sweep, pre) for pre in pretrainings]
    first = _planned(pretrainings, folders, force, warnings)
    return Plan(sweep, planned, tuple(spec.grid_paths()), tuple(warnings), first)


def _planned(
    runs: Sequence[RunConfig], folders: Sequence[Path], force: bool, warnings: list[str]
) -> tuple[PlannedRun, ...]:
    """Each run's state and resume point, read from its folder."""
    states = {}
    for run, folder in zip(runs, folders, strict=True):
        states[run.run_id] = "pending" if force else storage.run_state(folder, run)
        damaged = (folder / schema.SUMMARY).exists() and states[run.run_id] != "done"
        if not force and damaged and storage.config_matches(folder, run):
            warnings.append(f"{folder / schema.SUMMARY}: damaged; the run is not done")
    by_id = {run.run_id: folder for run, folder in zip(runs, folders, strict=True)}
    interrupted = {r: by_id[r] for r, state in states.items() if state == "interrupted"}
    fresh = [r for r, state in states.items() if state in ("pending", "failed")]
    points = resume.resume_points(interrupted, fresh, warnings.append)
    planned = []
    for run, folder in zip(runs, folders, strict=True):
        point = points.get(run.run_id, resume.Point(0))
        planned.append(
            PlannedRun(
                run,
                folder,
                states[run.run_id],
                point.epoch,
                point.device if point.epoch else None,
                point.pack,
                force,
            )
        )
    return tuple(planned)


def pack_key(run: RunConfig, start_epoch: int) -> tuple[Any, ...]:
    """What members of one pack must share; λ, free-bits mode, schedule and seed may differ."""
    return (run.dataset, run.model, replace(run.train, seed=0), run.eval, start_epoch)


def make_packs(
    todo: Sequence[PlannedRun],
    pack_size: int,
    jobs: int,
    fits: Callable[[RunConfig], int] | None = None,
) -> list[list[PlannedRun]]:
    """Group compatible runs into packs of at most `pack_size` (0: spread them over `jobs`, at
    most MAX_AUTO_PACK) and at most `fits(run)` members, what the device's memory holds."""
    groups: dict[tuple[Any, ...], list[PlannedRun]] = {}
    for item in todo:
        start = item.start_epoch if item.state == "interrupted" else 0
        groups.setdefault((*pack_key(item.run, start), item.pack), []).append(item)
    packs = []
    for key, members in groups.items():
        # A resumed pack stays whole: on a GPU another pack size rounds differently.
        size = pack_size or min(MAX_AUTO_PACK, math.ceil(len(members) / max(1, jobs)))
        if fits is not None:
            size = max(1, min(size, fits(members[0].run)))
        size = len(members) if key[-1] else size  # a resumed pack stays whole
        packs += [members[i : i + size] for i in range(0, len(members), size)]
    return packs


def memory_fit(devices: Sequence[str]) -> Callable[[RunConfig], int]:
    """`fits(run)`: how many members of run's config one pack may hold on the smallest device;
    a config whose single member does not fit is refused here, before anything starts."""
    free = min(cost.available_bytes(d) for d in devices)

    @cache
    def fits(run: RunConfig) -> int:
        data = dataset(run.dataset)
        memory = cost.estimate_memory(
            run, data.image_shape, len(data.x_train), len(data.x_test), data.vocab_size
        )
        count = cost.members_that_fit(memory, free)
        if count < 1:
            raise SpecError(
                "model",
                f"one run needs about {cost.gib(memory.total(1))} ({memory.parameters:,} "
                f"parameters, batch {run.train.batch_size}, data {cost.gib(memory.shared)}) but "
                f"{devices[0]} has {cost.gib(free)} free; use a smaller model or batch, or "
                "another device",
            )
        return count

    return fits


def prepare(plan_: Plan, spec: SweepSpec, replace_sweep: bool = False) -> None:
    """Write the sweep's spec; with `replace_sweep`, remove run folders the spec no longer has.

    Runs are reset (when they must start from scratch) only under their lock, in `train_pack`."""
    try:
        storage.write_text(plan_.sweep_dir / schema.SPEC_FILE, dump_spec(spec))
        # A kill between summary.json and the checkpoint's removal (runs and pretrainings):
        for item in (*plan_.runs, *plan_.pretrainings):
            leftover = (item.folder / schema.CHECKPOINT).exists()
            if item.state == "done" and leftover and (lock := locks.try_lock(item.folder, 0)):
                try:
                    storage.remove_checkpoints(item.folder)
                finally:
                    lock.release()
        for folder in dropped_runs(plan_.sweep_dir, spec) if replace_sweep else ():
            lock = locks.try_lock(folder)
            if lock is not None:  # one being trained by another sweep stays
                try:
                    storage.reset_run(folder)
                finally:
                    lock.release()
                (folder / locks.LOCK).unlink(missing_ok=True)
                folder.rmdir()
    except OSError as exc:
        raise ResultsError(
            f"{exc.filename or plan_.sweep_dir}: cannot write ({exc.strerror})"
        ) from None


def dropped_runs(sweep: Path, spec: SweepSpec) -> list[Path]:
    """Run folders of `sweep` that `spec` does not have: what replacing the sweep deletes."""
    runs = sweep / schema.RUNS_DIR
    if not runs.is_dir():
        return []
    keep = {run.run_id for run in spec.expand()}  # every shard's runs, not just ours
    return [f for f in sorted(runs.iterdir()) if f.is_dir() and f.name not in keep]


def check_ready(plan_: Plan, devices: Sequence[str]) -> list[str]:
    """Fail before anything is written: load every data set the plan needs, and refuse to resume a
    run on another kind of device than it was checkpointed on (RNG states do not carry over).
    Returns what loading changed that the user should hear (e.g. long sentences dropped)."""
    notes = []
    for item in plan_.todo:
        pretrain.check_source(item.run, plan_.sweep_dir)
    for spec in {item.run.dataset for item in plan_.todo}:
        notes += dataset(spec).notes
    from freebits_cli.models import (
        check_model,  # models: a likelihood or module that cannot run on the data
    )

    for model, spec in {(item.run.model, item.run.dataset) for item in plan_.todo}:
        check_model(model, dataset(spec))
    kind = devices[0].split(":")[0]
    for item in [*plan_.pretrain_todo, *plan_.todo]:
        if item.state == "interrupted" and item.checkpoint_device not in (None, kind):
            raise ResultsError(
                f"{item.folder}: checkpointed on {item.checkpoint_device}, cannot resume on {kind}; "
                "resume it there, or re-run with --force"
            )
    return sorted(set(notes))


def execute(
    plan_: Plan,
    packs: Sequence[Sequence[PlannedRun]],
    devices: Sequence[str],
    jobs: int,
    callbacks: Callbacks = Callbacks(),
    threads: int = 0,
    limit: cores.Cores | None = None,
) -> list[Outcome]:
    """Train `packs` (of `plan_`'s runs, from `make_packs`) on `devices` with `jobs` workers of
    `threads` threads each (0: torch's default); returns the outcome of each run. The callbacks
    are called in this process, also for packs that train in worker processes.

    Each pack starts by reading the registry of freebits trainers again: with `limit` (the cores
    the sweep may use) a pack in this process takes no more threads than its share beside them,
    and workers beyond that share wait (`workers.run_packs`)."""
    from freebits_cli.sweep.workers import run_packs

    outcomes: list[Outcome] = []
    if jobs == 1 or len(packs) == 1:
        for i, pack in enumerate(packs):
            device = devices[i % len(devices)]
            count = threads
            if threads and limit is not None:
                count = min(threads, cores.shared(limit, trainers.others()).count)
                trainers.register(count)
            with _torch_threads(count):
                result = train_pack(pack, plan_.grid_paths, device, callbacks=callbacks)
            outcomes += result
            if callbacks.on_pack:
                callbacks.on_pack(result)
        return outcomes
    return run_packs(packs, plan_.grid_paths, devices, jobs, threads, callbacks, limit)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads for one pack in this process, restored after it (0: unchanged)."""
    if not count:
        yield
        return
    import torch

    own = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(own)


def choose(
    todo: Sequence[PlannedRun],
    packs: list[list[PlannedRun]],
    devices: Sequence[str],
    jobs: int,
    threads: int,
    pack_size: int,
    fits: Callable[[RunConfig], int],
) -> tuple[cores.Choice, list[list[PlannedRun]]]:
    """How `packs` train here (`cores.choose`: workers and threads from the cores this sweep
    may use beside other freebits trainers) and the packs for it: with a split, one pack per
    member, pulled by the workers (on a CPU members train one by one in any pack, so a pack of
    one costs nothing, and the workers balance and share cores member by member)."""
    if not all(d == "cpu" for d in devices):  # GPU workers: one per GPU, torch's threads
        return cores.Choice(jobs or default_jobs(devices), 0, cores.machine(threads)), packs
    limit = cores.shared(cores.machine(threads), trainers.others())

    def timing() -> cores.Timing | None:
        startup = cores.startup_guess(trainers.startup())
        return cost.cpu_timing(packs, limit.count, startup)

    choice = cores.choose(packs, limit, jobs, bool(pack_size), timing)
    if choice.split:
        packs = make_packs(todo, 1, choice.workers, fits)
    return choice, packs


def default_jobs(devices: Sequence[str]) -> int:
    """One worker per GPU; on the CPU, DEFAULT_CPU_JOBS (see its measurement)."""
    return len(devices) if devices[0].startswith("cuda") else DEFAULT_CPU_JOBS
