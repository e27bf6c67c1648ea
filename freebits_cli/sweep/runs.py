"""What a sweep plans to train: each run with its folder and state, and the data sets they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli.spec import DatasetSpec, RunConfig

if TYPE_CHECKING:  # torch is imported only when training starts
    from freebits_cli.engine.train import EpochCallback, Outcome, StepCallback


@dataclass(frozen=True)
class PlannedRun:
    run: RunConfig
    folder: Path
    state: str  # done | failed | interrupted | pending (before this sweep)
    start_epoch: int = 0
    checkpoint_device: str | None = None  # device type an interrupted run was checkpointed on
    pack: tuple[str, ...] = ()  # run ids it trained with, when it resumes from a checkpoint
    forced: bool = False  # --force: train from scratch whatever the folder holds


@dataclass(frozen=True)
class Plan:
    sweep_dir: Path
    runs: tuple[PlannedRun, ...]
    grid_paths: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # one line per damaged file found
    #: The pretrainings the runs to train start from (`pretrain`), each planned like a run in
    #: RESULTS/<sweep>/pretrain/<id>/: trained before the runs that need them.
    pretrainings: tuple[PlannedRun, ...] = ()

    @property
    def todo(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.state != "done"]

    @property
    def pretrain_todo(self) -> list[PlannedRun]:
        return [r for r in self.pretrainings if r.state != "done"]


@dataclass(frozen=True)
class Callbacks:
    """A sweep's progress as it trains, by name. Each is called in the sweep's own process, also
    for packs that train in worker processes."""

    on_epoch: EpochCallback | None = None  # (run_ids, epoch, epochs): an epoch's rows committed
    on_step: StepCallback | None = None  # (run_ids, epoch, step, steps): within an epoch
    on_pack: Callable[[Sequence[Outcome]], None] | None = None  # (outcomes): a pack has ended


@cache
def dataset(spec: DatasetSpec) -> Any:
    """The loaded data set of a spec, cached per process."""
    from freebits_cli.data import load_dataset

    return load_dataset(spec)
