"""The Python API: a results folder as pandas tables, for notebooks.

    import freebits_cli as fb
    runs = fb.load_runs("results/default")      # one row per run (= the report's summary.csv)
    curves = fb.load_curves("results/default")  # one row per run and epoch (metrics.csv)
    kl = fb.load_kl("results/default")          # one row per run, epoch and latent unit

Each reads the run folders with the same reader as `freebits report` (report.load), so a table
here and the report's agree. Problems in the files (a torn CSV line, a corrupt summary.json) are
raised as Python warnings, one per problem, and the rest is read.
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from freebits_cli.results.reader import Runs, read_kl_history, read_results

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_curves", "load_kl", "load_runs"]


def _read(path: str | PathLike[str]) -> Runs:
    root = Path(path).expanduser()
    runs = read_results(root, skip=root / "report")
    for line in runs.warnings:
        warnings.warn(line, stacklevel=3)
    return runs


def _id_columns(runs: Runs) -> list[str]:
    """What names a run in the long tables: its sweep, id and state, and its setting."""
    keys = [k for k in runs.keys if k != "sweep"]
    return ["sweep", "run_id", "state", *keys, "seed"]


def _long(runs: Runs, parts: dict[str, pd.DataFrame], order: list[str]) -> pd.DataFrame:
    """Each run's rows (`parts`, keyed like runs.dirs) with its id columns in front."""
    import pandas as pd

    ids = _id_columns(runs)
    table = runs.table.set_index("path")
    frames = []
    for key, rows in parts.items():
        rows = rows.drop(columns=[c for c in ids if c in rows])
        for col in reversed(ids):
            rows.insert(0, col, table.at[key, col])
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=[*ids, *order])
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["sweep", "run_id", *order], kind="stable").reset_index(drop=True)


def load_runs(path: str | PathLike[str]) -> pd.DataFrame:
    """One row per run below `path`: sweep, run_id, state (done / failed / incomplete), the
    setting columns (lambda, free_bits_mode, anneal, seed and every other field that varies), then
    the final metrics (summary.json; the last epoch so far for unfinished runs) — the report's
    summary.csv. Raises ResultsError when `path` holds no readable run."""
    return _read(path).table.drop(columns="path")


def load_curves(path: str | PathLike[str]) -> pd.DataFrame:
    """One row per run and epoch: the run's id columns (as load_runs) and every metrics.csv
    column (beta, train_loss, test_elbo, active_units, ...), unfinished runs included."""
    runs = _read(path)
    return _long(runs, runs.metrics, ["epoch"])


def load_kl(path: str | PathLike[str]) -> pd.DataFrame:
    """One row per run, epoch and latent unit: the id columns, then epoch, dim, kl (kl_per_dim.csv:
    the test-set mean KL of each unit, in nats) and, in runs that wrote them, its split into
    kl_spread (½ Var_x μ_j, the part that varies with x) and kl_rest (kl − kl_spread)."""
    runs = _read(path)
    parts = {}
    for key, run_dir in runs.dirs.items():

        def warn(msg: str, key: str = key) -> None:
            warnings.warn(f"{key}: {msg}", stacklevel=3)

        if (hist := read_kl_history(run_dir, warn)) is not None:
            parts[key] = hist
    return _long(runs, parts, ["epoch", "dim"])
