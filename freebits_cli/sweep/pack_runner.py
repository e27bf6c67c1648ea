"""Train one pack in this process: lock its runs, decide under the locks where each starts (from
scratch, or from its checkpoints; a fresh start after a pretraining needs it complete, trained or
waited for here), and run the trainer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from freebits_cli import schema
from freebits_cli.errors import ResultsError
from freebits_cli.results import locks, resume, storage
from freebits_cli.spec import RunConfig
from freebits_cli.sweep import pretrain
from freebits_cli.sweep.runs import Callbacks, PlannedRun, dataset

if TYPE_CHECKING:  # torch is imported only when training starts
    from freebits_cli.engine.train import Outcome


def train_pack(
    pack: Sequence[PlannedRun],
    grid_paths: Sequence[str],
    device: str,
    threads: int = 0,
    callbacks: Callbacks = Callbacks(),
) -> list[Outcome]:
    """Train one pack on `device` (in this process), resuming members from their checkpoints.

    Each run is locked first; a run another process holds is left to it (outcome "busy", its
    reason the holder), and one found complete under its lock is not trained again."""
    from freebits_cli.engine.train import Outcome

    held: list[tuple[PlannedRun, locks.RunLock]] = []
    outcomes: list[Outcome] = []
    try:
        for item in pack:
            lock = locks.try_lock(item.folder)
            if lock is None:
                who = locks.holder(item.folder) or "another process"
                outcomes.append(Outcome(item.run.run_id, "busy", f"trained by {who}"))
            else:
                held.append((item, lock))
        members = [item for item, _ in held]
        outcomes += _train_held(members, grid_paths, device, threads, callbacks)
    except OSError as exc:
        where = exc.filename or pack[0].folder
        raise ResultsError(f"{where}: cannot write ({exc.strerror})") from None
    finally:
        for _, lock in held:
            lock.release()
    return outcomes


def _train_held(
    pack: Sequence[PlannedRun],
    grid_paths: Sequence[str],
    device: str,
    threads: int,
    callbacks: Callbacks,
) -> list[Outcome]:
    """Decide again, now that the runs are locked, where each starts; train them by start epoch."""
    from freebits_cli.engine.train import Outcome

    outcomes: list[Outcome] = []
    fresh: dict[str, str] = {}
    for item in pack:
        state = "pending" if item.forced else storage.run_state(item.folder, item.run)
        if state == "done":  # finished by another sweep since this one planned
            summary = storage.read_summary(item.folder)
            outcomes.append(Outcome(item.run.run_id, "done", "already complete", summary))
        else:
            fresh[item.run.run_id] = state
    todo = [item for item in pack if item.run.run_id in fresh]
    interrupted = {i.run.run_id: i.folder for i in todo if fresh[i.run.run_id] == "interrupted"}
    others = [run_id for run_id in fresh if run_id not in interrupted]
    points = resume.resume_points(interrupted, others, lambda _: None)  # the plan warned
    groups: dict[int, list[PlannedRun]] = {}
    for item in todo:
        start = points.get(item.run.run_id, resume.Point(0)).epoch
        groups.setdefault(start, []).append(item)
    if 0 in groups:  # fresh starts from a pretraining need it complete first
        groups[0], failed = _with_pretrainings(groups[0], device, threads, grid_paths)
        outcomes += failed
        if not groups[0]:
            del groups[0]
    for start, members in sorted(groups.items()):
        outcomes += _train_group(members, start, grid_paths, device, threads, callbacks)
    return outcomes


def _with_pretrainings(
    fresh: list[PlannedRun], device: str, threads: int, grid_paths: Sequence[str]
) -> tuple[list[PlannedRun], list[Outcome]]:
    """Train (or wait for) the pretrainings of runs starting from scratch; a run whose
    pretraining failed fails with that reason and does not train."""
    from freebits_cli.engine import interrupt
    from freebits_cli.engine.train import Outcome
    from freebits_cli.results import records

    if not any(item.run.pretrain.epochs for item in fresh):
        return fresh, []
    sweep = fresh[0].folder.parent.parent
    runs = [i.run for i in fresh]
    reasons = ensure_pretrainings(runs, sweep, device, threads, interrupt.check)
    outcomes = []
    for item in fresh:
        if item.run.run_id in reasons:
            storage.reset_run(item.folder)
            reason = reasons[item.run.run_id]
            records.write_failure(item.folder, item.run, item.run.setting(grid_paths), reason, 0)
            outcomes.append(Outcome(item.run.run_id, "failed", reason))
    return [i for i in fresh if i.run.run_id not in reasons], outcomes


def _train_group(
    pack: Sequence[PlannedRun],
    start: int,
    grid_paths: Sequence[str],
    device: str,
    threads: int,
    callbacks: Callbacks,
) -> list[Outcome]:
    import torch

    from freebits_cli.engine.train import Member, PackTrainer

    if threads:
        torch.set_num_threads(threads)
    first = pack[0].run
    # Process-wide switches, set for every pack so one pack's settings cannot leak into the next:
    # TensorFloat-32 only when asked for (cuDNN's convolutions allow it by default); and the same
    # command on the same GPU gives the same numbers: no cuDNN autotuning, and only deterministic
    # cuDNN algorithms (some of its faster convolution backward kernels sum with atomics).
    tf32 = first.train.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    data = dataset(first.dataset)
    members, states = [], []
    for item in pack:
        if start:
            states.append(resume.restore(item.folder, start))
        else:
            storage.reset_run(item.folder)
        setting = item.run.setting(grid_paths)
        if not (item.folder / schema.CONFIG).exists():
            storage.write_json(
                item.folder / schema.CONFIG,
                {
                    "run_id": item.run.run_id,
                    "sweep": item.folder.parent.parent.name,
                    "config": item.run.to_dict(),
                    "setting": setting,
                    **storage.environment(device),
                },
            )
        source, encoder_only = pretrain.start_of(item.run, item.folder.parent.parent)
        members.append(
            Member(item.run, item.folder, setting, init_from=source, encoder_only=encoder_only)
        )
    trainer = PackTrainer(members, data, torch.device(device))
    if start:
        trainer.resume(states)
    return trainer.run(callbacks.on_epoch, callbacks.on_step)


def ensure_pretrainings(
    runs: Sequence[RunConfig],
    sweep: Path,
    device: str,
    threads: int,
    check: Callable[[], None],
) -> dict[str, str]:
    """Make every pretraining `runs` need complete: train it here (under its lock, resuming from
    its checkpoint) or wait for the process that holds it. Returns, per run id whose pretraining
    failed, the reason (the run cannot start)."""
    failed: dict[str, str] = {}
    for pre in pretrain.needed(runs):
        folder = pretrain.folder_of(sweep, pre)
        tried = False
        while (state := storage.run_state(folder, pre)) != "done":
            if tried and state == "failed":
                record = storage.read_json(folder / schema.FAILED) or {}
                reason = f"its pretraining {pre.run_id} failed: {record.get('reason', '?')}"
                for run in runs:
                    if (p := pretrain.pretraining_of(run)) is not None and p.run_id == pre.run_id:
                        failed[run.run_id] = reason
                break
            item = PlannedRun(pre, folder, state)
            outcomes: list[Outcome] = train_pack([item], (), device, threads)
            if any(o.state == "busy" for o in outcomes):
                locks.wait_until_free([folder], check)
            tried = True
    return failed
