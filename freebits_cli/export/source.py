"""What export sends, read from the run folders only (never the trainer's memory).

One `ExportRun` per run folder, read by the report's reader (report.load) so the exported setting,
state and final metrics are those of summary.csv.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli import schema
from freebits_cli.results.reader import read_kl_history, read_results, read_samples, read_sentences

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Final metrics (summary.json; the last epoch so far for unfinished runs), as in summary.csv.
#: metrics.csv columns that name the run or its setting rather than measure it.
NOT_SCALARS = {"run_id", "lambda", "free_bits_mode", "anneal", "seed", "binarize", "epoch"}
#: Files logged as artifacts when present.


@dataclass
class ExportRun:
    """One run as the exporters see it."""

    sweep: str
    run_id: str
    state: str  # done / failed / incomplete
    folder: Path
    params: dict[str, Any]  # the whole config, flattened to dotted field paths
    hparams: dict[str, Any]  # its setting: λ, mode, schedule, seed, every field that varies
    final: dict[str, float]  # finite final metrics
    curves: pd.DataFrame | None  # metrics.csv: one row per epoch
    kl: pd.DataFrame | None  # kl_per_dim.csv: epoch, dim, kl
    images: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (H, W, C) uint8
    texts: dict[str, list[str]] = field(default_factory=dict)  # name -> sentences

    @property
    def epochs(self) -> int:
        return 0 if self.curves is None else int(self.curves["epoch"].max())

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    def scalar_columns(self) -> list[str]:
        """Every numeric metrics.csv column that measures something (not the setting)."""
        import pandas as pd

        if self.curves is None:
            return []
        return [
            c
            for c in self.curves.columns
            if c not in NOT_SCALARS and pd.api.types.is_numeric_dtype(self.curves[c])
        ]


def _plain(value: Any) -> Any:
    """A table cell as a plain str / int / float / bool; None for a missing value."""
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def read_export_runs(
    results_dir: Path, warn: Callable[[str], None], sweep: str | None = None
) -> list[ExportRun]:
    """Every run below `results_dir` (only those of `sweep` when given), files read as they are
    now; problems in them go to `warn`, one line each, and the rest is exported."""
    runs = read_results(results_dir, skip=results_dir / "report")
    for line in runs.warnings:
        warn(line)
    table = runs.table
    out = []
    for _, row in table.iterrows():
        if sweep is not None and row["sweep"] != sweep:
            continue
        key = row["path"]
        folder = runs.dirs[key]

        def run_warn(msg: str, key: str = key) -> None:
            warn(f"{key}: {msg}")

        hparams = {k: _plain(row[k]) for k in [*runs.keys, "seed"] if k != "sweep"}
        final = {
            m: float(row[m])
            for m in schema.EXPORTED_METRICS
            if m in row and _plain(row[m]) is not None
        }
        run = ExportRun(
            sweep=str(row["sweep"]),
            run_id=str(row["run_id"]),
            state=str(row["state"]),
            folder=folder,
            params=runs.configs.get(key, {}),
            hparams={k: v for k, v in hparams.items() if v is not None},
            final=final,
            curves=runs.metrics.get(key),
            kl=read_kl_history(folder, run_warn),
        )
        if run.finished:
            _read_samples(run, run_warn)
        out.append(run)
    return out


def _read_samples(run: ExportRun, warn: Callable[[str], None]) -> None:
    """samples.npz: images (originals over reconstructions; prior samples); text runs:
    samples.json's sentences. A run without samples exports without them."""
    import numpy as np

    sentences = read_sentences(run.folder, warn)
    if sentences is not None:
        run.texts = sentences
        return
    if not (run.folder / schema.SAMPLES).is_file():
        return
    data = read_samples(run.folder, warn)
    if data is None:
        return
    shape = tuple(int(v) for v in np.ravel(data["image_shape"]))
    if "originals" in data and "reconstructions" in data:
        run.images["reconstructions"] = image_grid(
            [data["originals"], data["reconstructions"]], shape
        )
    if "prior_samples" in data:
        run.images["prior_samples"] = image_grid([data["prior_samples"]], shape)


def image_grid(rows: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Rows of [n, C·H·W] images in [0, 1] as one (H', W', C) uint8 picture, 1 px apart."""
    import numpy as np

    c, h, w = (1, *shape) if len(shape) == 2 else shape
    n = max(len(r) for r in rows)
    grid = np.zeros((len(rows) * (h + 1) - 1, n * (w + 1) - 1, c), dtype=np.float32)
    for i, images in enumerate(rows):
        for j, flat in enumerate(images):
            tile = np.asarray(flat, dtype=np.float32).reshape(c, h, w).transpose(1, 2, 0)
            grid[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = tile
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
