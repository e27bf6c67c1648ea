"""Export run folders to TensorBoard and MLflow: `freebits export` and `freebits sweep --log`.

Both read the run folders only (export.source), never the trainer, and are idempotent, keyed by
run id: exporting again adds only epochs and runs that are new. `sweep --log` calls the same
exporter after each committed epoch from a background thread (export.live), so logging never
slows or stops training. The libraries are optional extras, checked before anything is written.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freebits_cli.errors import SpecError

KINDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # target -> module the extra installs


@dataclass(frozen=True)
class Target:
    """Where to export: `kind` (tensorboard or mlflow) and a folder or tracking URI (None: the
    default under the results folder: RESULTS/tensorboard, sqlite:///RESULTS/mlflow.db)."""

    kind: str
    where: str | None = None


@dataclass(frozen=True)
class ExportResult:
    runs: int  # runs read
    epochs: dict[str, int]  # per target: run-epochs newly written
    finished: dict[str, int]  # per target: finished runs whose final records were written
    where: dict[str, str]  # per target: the folder or URI, and how to view it


def parse_targets(values: Sequence[str], option: str = "--to") -> list[Target]:
    """`tensorboard`, `tensorboard=DIR`, `mlflow`, `mlflow=URI` (each at most once); checks
    that each target's extra is installed. Raises SpecError (exit 2) naming what is wrong."""
    targets: dict[str, Target] = {}
    for value in values:
        kind, sep, where = value.strip().partition("=")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise SpecError(
                option, f"unknown target {kind!r} (use tensorboard[=DIR], mlflow[=URI])"
            )
        if sep and not where.strip():
            raise SpecError(option, f"{kind}= needs a {'URI' if kind == 'mlflow' else 'folder'}")
        if kind in targets:
            raise SpecError(option, f"{kind} is given twice")
        if importlib.util.find_spec(KINDS[kind]) is None:
            raise SpecError(
                option,
                f"{kind} is not installed: pip install 'freebits[{kind}]' (the {kind} extra)",
            )
        targets[kind] = Target(kind, where.strip() or None)
    if not targets:
        raise SpecError(option, "no target given (use tensorboard[=DIR] and/or mlflow[=URI])")
    return list(targets.values())


def open_targets(targets: Sequence[Target], results_dir: Path, live: bool = False) -> list[Any]:
    """The writers for `targets`, defaults placed under `results_dir`."""
    writers: list[Any] = []
    for target in targets:
        if target.kind == "tensorboard":
            from freebits_cli.export.tensorboard import TensorBoardTarget

            where = Path(target.where) if target.where else Path(results_dir) / "tensorboard"
            writers.append(TensorBoardTarget(where, keep_open=live))
        else:
            from freebits_cli.export.mlflow import MlflowTarget, default_uri

            writers.append(MlflowTarget(target.where or default_uri(results_dir)))
    return writers


def export_runs(
    results_dir: Path,
    writers: Sequence[Any],
    warn: Callable[[str], None],
    sweep: str | None = None,
) -> ExportResult:
    """Write every run below `results_dir` (of `sweep` only, when given) to each writer."""
    from freebits_cli.export.source import read_export_runs

    runs = read_export_runs(Path(results_dir), warn, sweep)
    epochs, finished = {}, {}
    for writer in writers:
        counts = [writer.write(run) for run in runs]
        epochs[writer.name] = sum(e for e, _ in counts)
        finished[writer.name] = sum(f for _, f in counts)
    return ExportResult(len(runs), epochs, finished, {w.name: w.where() for w in writers})


def export(
    results_dir: Path, targets: Sequence[Target], warn: Callable[[str], None]
) -> ExportResult:
    """`freebits export RESULTS --to ...`: every run below `results_dir`, once."""
    writers = open_targets(targets, results_dir)
    try:
        return export_runs(results_dir, writers, warn)
    finally:
        for writer in writers:
            writer.close()


__all__ = ["ExportResult", "Target", "export", "export_runs", "open_targets", "parse_targets"]
