"""Where an interrupted run resumes: the trainer's checkpoint protocol, read back from disk.

After epoch E the trainer writes, in this order: every member's `checkpoint.next.pt` (epoch E, with
the pack's membership), every member's CSV rows of E, then each member's promotion of
`checkpoint.next.pt` to `checkpoint.pt` (a rename). A kill between any two of these writes leaves
every member holding a checkpoint of E-1 or of E, so the newest epoch that *every* member of the
recorded pack holds is one they can all resume from, together, in the same pack. That matters on a
GPU, where a pack of another size rounds differently; on a CPU packs are bit-identical anyway.
A member found alone (or with damaged files) resumes on its own or restarts from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freebits_cli import schema
from freebits_cli.results import records, storage

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Saved:
    """The checkpoints one run folder holds."""

    epochs: dict[int, str]  # epoch -> checkpoint file name
    pack: tuple[str, ...]  # run ids of the pack that wrote the newest checkpoint
    device: str | None  # device type of the newest checkpoint
    damaged: bool = False  # a checkpoint file that cannot be read


@dataclass(frozen=True)
class Point:
    """Where a run resumes: epoch 0 means from scratch."""

    epoch: int
    pack: tuple[str, ...] = ()
    device: str | None = None


def inspect(folder: Path, warn: Warn) -> Saved:
    """Read the run's checkpoints (tensors mapped, not loaded); warn about each damaged one."""
    epochs: dict[int, str] = {}
    newest, pack, device, damaged = -1, (), None, False
    for name in (schema.CHECKPOINT, schema.CHECKPOINT_NEXT):
        try:
            state = storage.load_checkpoint(folder / name, lazy=True)
        except ValueError as exc:
            warn(f"{folder / name}: damaged checkpoint ({exc}); not used")
            damaged = True
            continue
        if state is None:
            continue
        epoch = state["epoch"]
        epochs[epoch] = name
        if epoch > newest:
            newest, device = epoch, state.get("device_type")
            pack = tuple(str(r) for r in state.get("pack") or ())
    return Saved(epochs, pack, device, damaged)


def csv_complete(folder: Path, epoch: int) -> str | None:
    """None when metrics.csv and kl_per_dim.csv hold every epoch before `epoch` (and maybe
    `epoch` itself, written from its checkpoint otherwise), each once; else what is wrong."""
    want = list(range(1, epoch))
    for name in (schema.METRICS_CSV, schema.KL_PER_DIM):
        found = storage.csv_epochs(folder / name)
        if found is None and (want or (folder / name).exists()):
            return f"{folder / name} is missing or unreadable"
        kept = [e for e in found or [] if e <= epoch]
        if name == schema.KL_PER_DIM:  # D rows per epoch
            kept = sorted(set(kept))
        if kept not in (want, [*want, epoch]):
            return f"{folder / name} lacks rows of epochs before {epoch}"
    return None


def resume_points(
    interrupted: Mapping[str, Path], fresh: Iterable[str], warn: Warn
) -> dict[str, Point]:
    """Where each interrupted run (run id -> folder) resumes, given the runs that will start
    from scratch (`fresh`: pending or failed). Every member can always start again at epoch 0,
    so the newest epoch all pack mates at hand hold exists; mates that are complete or trained
    elsewhere are not waited for."""
    saved = {run_id: inspect(folder, warn) for run_id, folder in interrupted.items()}
    # A damaged member starts again, and so do its mates: resumed in a pack of another size
    # they would not end with the numbers of an uninterrupted sweep.
    held = {run_id: {0} if s.damaged else {0, *s.epochs} for run_id, s in saved.items()}
    held |= {run_id: {0} for run_id in fresh}
    while True:  # each pass either settles every run or sends one more back to epoch 0
        points = _points(saved, held)
        broken = {
            run_id: problem
            for run_id, point in points.items()
            if point.epoch and (problem := csv_complete(interrupted[run_id], point.epoch))
        }
        if not broken:
            return points
        for run_id, problem in broken.items():
            warn(f"{problem}; the run restarts from scratch")
            held[run_id] = {0}


def _points(saved: Mapping[str, Saved], held: Mapping[str, set[int]]) -> dict[str, Point]:
    points = {}
    for run_id, own in saved.items():
        mates = {m for m in own.pack if m in held} | {run_id}
        epoch = max(set.intersection(*(held[m] for m in mates)))
        points[run_id] = Point(epoch, tuple(sorted(mates)), own.device) if epoch else Point(0)
    return points


def restore(folder: Path, epoch: int) -> dict[str, Any]:
    """Make `epoch`'s checkpoint the run's checkpoint and its CSVs end at `epoch`; return it.

    Called under the run's lock. The rows of `epoch` are written again from the checkpoint when
    a kill came before (or halfway through) them; later or torn rows are dropped."""
    saved = inspect(folder, lambda _: None)
    if saved.epochs.get(epoch) == schema.CHECKPOINT_NEXT:
        storage.promote_checkpoint(folder)
    else:
        (folder / schema.CHECKPOINT_NEXT).unlink(missing_ok=True)
    state = storage.load_checkpoint(folder / schema.CHECKPOINT)
    if state is None or state["epoch"] != epoch:
        raise ValueError(f"{folder / schema.CHECKPOINT}: changed while resuming")
    metrics, kl = folder / schema.METRICS_CSV, folder / schema.KL_PER_DIM
    storage.trim_rows(metrics, epoch)
    storage.trim_rows(kl, epoch)
    if epoch not in (storage.csv_epochs(metrics) or []):
        records.append_metrics(folder, state["last_row"])
    if epoch not in (storage.csv_epochs(kl) or []):
        spread = state.get("kl_spread")
        records.append_kl(
            folder,
            epoch,
            state["kl_history"].tolist()[-1],
            None if spread is None else spread.tolist(),
        )
    return state
