"""Decide what to train and where: skip complete runs, resume interrupted ones, form packs, place them.

Runs that may share one batched model (same data, architecture and optimisation settings, same
epoch to resume from) are grouped into packs of at most `pack_size`; packs run one after another in
this process (`jobs=1`, with per-epoch progress) or in `jobs` worker processes, spread over devices.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .errors import ResultsError, SpecError
from .spec import DatasetSpec, RunConfig, SweepSpec
from .spec_file import dump_spec

if TYPE_CHECKING:  # torch is imported only when training starts
    from .train import EpochCallback, Outcome

MAX_AUTO_PACK = 64


@dataclass(frozen=True)
class PlannedRun:
    run: RunConfig
    folder: Path
    state: str  # done | failed | interrupted | pending (before this sweep)
    start_epoch: int = 0
    checkpoint_device: str | None = None  # device type an interrupted run was checkpointed on


@dataclass(frozen=True)
class Plan:
    sweep_dir: Path
    runs: tuple[PlannedRun, ...]
    grid_paths: tuple[str, ...]

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.state != "done"]


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
    """`auto` -> cuda when available, else cpu; a comma list -> its members."""
    import torch

    if device == "auto":
        return ["cuda"] if torch.cuda.is_available() else ["cpu"]
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


def plan(spec: SweepSpec, results: Path, force: bool = False, shard: str | None = None) -> Plan:
    index, count = parse_shard(shard)
    sweep = storage.sweep_dir(results, spec.name)
    runs = sorted(spec.expand(), key=lambda r: r.run_id)[index::count]
    planned = []
    for run in runs:
        folder = storage.run_dir(sweep, run.run_id)
        state = "pending" if force else storage.run_state(folder, run)
        start, device = 0, None
        if state == "interrupted":
            checkpoint = storage.load_checkpoint(folder / storage.CHECKPOINT)
            if checkpoint:
                start, device = int(checkpoint["epoch"]), checkpoint.get("device_type")
        planned.append(PlannedRun(run, folder, state, start, device))
    return Plan(sweep, tuple(planned), tuple(spec.grid_paths()))


def pack_key(run: RunConfig, start_epoch: int) -> tuple[Any, ...]:
    """What members of one pack must share; λ, free-bits mode, schedule and seed may differ."""
    return (run.dataset, run.model, replace(run.train, seed=0), run.eval, start_epoch)


def make_packs(todo: Sequence[PlannedRun], pack_size: int, jobs: int) -> list[list[PlannedRun]]:
    groups: dict[tuple[Any, ...], list[PlannedRun]] = {}
    for item in todo:
        start = item.start_epoch if item.state == "interrupted" else 0
        groups.setdefault(pack_key(item.run, start), []).append(item)
    packs = []
    for members in groups.values():
        size = pack_size or min(MAX_AUTO_PACK, math.ceil(len(members) / max(1, jobs)))
        packs += [members[i : i + size] for i in range(0, len(members), size)]
    return packs


def prepare(plan_: Plan, spec: SweepSpec) -> None:
    """Write the sweep's resolved spec and clear runs that must start from scratch."""
    try:
        storage.write_text(plan_.sweep_dir / "spec.yaml", dump_spec(spec))
        for item in plan_.todo:
            if not item.start_epoch:  # pending, failed, or interrupted before its first checkpoint
                storage.reset_run(item.folder)
    except OSError as exc:
        raise ResultsError(
            f"{exc.filename or plan_.sweep_dir}: cannot write ({exc.strerror})"
        ) from None


@cache
def _dataset(spec: DatasetSpec) -> Any:
    from .data import load_dataset

    return load_dataset(spec)


def check_ready(plan_: Plan, devices: Sequence[str]) -> None:
    """Fail before anything is written: load every data set the plan needs, and refuse to resume a
    run on another kind of device than it was checkpointed on (RNG states do not carry over)."""
    for spec in {item.run.dataset for item in plan_.todo}:
        _dataset(spec)
    from .models import check_model  # models: a likelihood or module that cannot run on the data

    for model, spec in {(item.run.model, item.run.dataset) for item in plan_.todo}:
        check_model(model, _dataset(spec))
    kind = devices[0].split(":")[0]
    for item in plan_.todo:
        if item.state == "interrupted" and item.checkpoint_device not in (None, kind):
            raise ResultsError(
                f"{item.folder}: checkpointed on {item.checkpoint_device}, cannot resume on {kind}; "
                "resume it there, or re-run with --force"
            )


def train_pack(
    pack: Sequence[PlannedRun],
    grid_paths: Sequence[str],
    device: str,
    on_epoch: EpochCallback | None = None,
    threads: int = 0,
) -> list[Outcome]:
    """Train one pack on `device` (in this process), resuming members from their checkpoints."""
    import torch

    from .train import Member, PackTrainer

    if threads:
        torch.set_num_threads(threads)
    first = pack[0].run
    # Process-wide switch: set it for every pack so one tf32 pack cannot leak into the next.
    torch.backends.cuda.matmul.allow_tf32 = first.train.precision == "tf32"
    data = _dataset(first.dataset)
    members = []
    for item in pack:
        item.folder.mkdir(parents=True, exist_ok=True)
        setting = item.run.setting(grid_paths)
        if not (item.folder / storage.CONFIG).exists():
            storage.write_json(
                item.folder / storage.CONFIG,
                {
                    "run_id": item.run.run_id,
                    "sweep": item.folder.parent.parent.name,
                    "config": item.run.to_dict(),
                    "setting": setting,
                    **storage.environment(device),
                },
            )
        members.append(Member(item.run, item.folder, setting))
    trainer = PackTrainer(members, data, torch.device(device))
    if pack[0].start_epoch:
        states = [storage.load_checkpoint(item.folder / storage.CHECKPOINT) for item in pack]
        if any(s is None for s in states):
            raise RuntimeError("a checkpoint vanished while resuming")  # pragma: no cover
        for item in pack:
            for name in (storage.METRICS, storage.KL_PER_DIM):
                storage.trim_rows(item.folder / name, pack[0].start_epoch)
        trainer.resume(states)  # type: ignore[arg-type]
    return trainer.run(on_epoch)


def _worker(args: tuple[Any, ...]) -> list[Outcome]:
    return train_pack(*args)


PackCallback = Callable[[Sequence["Outcome"]], None]


def execute(
    plan_: Plan,
    device: str,
    pack_size: int = 0,
    jobs: int = 1,
    on_epoch: EpochCallback | None = None,
    on_pack: PackCallback | None = None,
) -> list[Outcome]:
    """Train every run of the plan that is not done; returns the outcome of each."""
    devices = resolve_devices(device)
    jobs = max(1, jobs)
    packs = make_packs(plan_.todo, pack_size, jobs)
    outcomes: list[Outcome] = []
    if jobs == 1 or len(packs) == 1:
        for i, pack in enumerate(packs):
            result = train_pack(pack, plan_.grid_paths, devices[i % len(devices)], on_epoch)
            outcomes += result
            if on_pack:
                on_pack(result)
        return outcomes
    on_cpu = all(d == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // jobs) if on_cpu else 0
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(packs)), mp_context=context) as pool:
        futures = [
            pool.submit(_worker, (pack, plan_.grid_paths, devices[i % len(devices)], None, threads))
            for i, pack in enumerate(packs)
        ]
        for future in as_completed(futures):
            result = future.result()
            outcomes += result
            if on_pack:
                on_pack(result)
    return outcomes
