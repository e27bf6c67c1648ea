"""What a run writes, record by record: its epoch rows, its failure, its samples and its summary.

`storage` knows how to write files safely; this module knows what goes in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from freebits_cli import schema
from freebits_cli.results import storage
from freebits_cli.spec import RunConfig


def labels(run: RunConfig) -> dict[str, Any]:
    """The columns that say which run a row belongs to, in every output."""
    values = {
        "lambda": run.free_bits.lam,
        "free_bits_mode": run.free_bits.mode,
        "anneal": run.anneal.schedule,
        "seed": run.train.seed,
        "binarize": run.dataset.binarize,
    }
    return {name: values[name] for name in schema.LABELS}


def append_epoch(
    folder: Path,
    row: dict[str, Any],
    kl_per_dim: Sequence[float],
    kl_spread: Sequence[float] | None = None,
) -> None:
    """One epoch's row of metrics.csv and its D rows of kl_per_dim.csv."""
    append_metrics(folder, row)
    append_kl(folder, row["epoch"], kl_per_dim, kl_spread)


def append_metrics(folder: Path, row: dict[str, Any]) -> None:
    storage.append_rows(folder / schema.METRICS_CSV, schema.METRICS_COLUMNS, [row])


def append_kl(
    folder: Path, epoch: int, kl_per_dim: Sequence[float], kl_spread: Sequence[float] | None = None
) -> None:
    """D rows of kl_per_dim.csv: each unit's KL and, where measured, its split into the part from
    the spread of the posterior means across x and the rest (kl_rest = kl − kl_spread, the offset
    and variance terms; schema.KL_COLUMNS). Without a spread (rows rebuilt from a checkpoint of an
    earlier version) the two are left empty."""
    spread = list(kl_spread) if kl_spread is not None and len(kl_spread) else None
    kl_rows = [
        {"epoch": epoch, "dim": j, "kl": v}
        | ({"kl_spread": spread[j], "kl_rest": v - spread[j]} if spread else {})
        for j, v in enumerate(kl_per_dim)
    ]
    storage.append_rows(folder / schema.KL_PER_DIM, schema.KL_COLUMNS, kl_rows)


def write_failure(
    folder: Path, run: RunConfig, setting: dict[str, Any], reason: str, epoch: int
) -> None:
    """failed.json, and no checkpoint: a failed run is retried from scratch next time."""
    record = {
        "run_id": run.run_id,
        "reason": reason,
        "epoch": epoch,
        **labels(run),
        "setting": setting,
    }
    storage.write_json(folder / schema.FAILED, record)
    storage.remove_checkpoints(folder)


def write_samples(folder: Path, image_shape: Sequence[int], **arrays: np.ndarray) -> None:
    """samples.npz (originals, reconstructions, prior_samples), replaced atomically."""
    path = folder / schema.SAMPLES
    tmp = storage.temporary(path, suffix=".tmp.npz")  # unique: two sweeps may share the folder
    try:
        np.savez_compressed(tmp, image_shape=np.array(image_shape), **arrays)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_summary(
    folder: Path,
    run: RunConfig,
    last_row: dict[str, Any],
    kl_history: Sequence[Sequence[float]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """summary.json, written last (it marks the run complete); then the checkpoint goes."""
    summary = {
        "run_id": run.run_id,
        "sweep": folder.parent.parent.name,
        **labels(run),
        "latent_dim": run.model.latent_dim,
        "epochs": run.train.epochs,
        "dataset": run.dataset.name,
        **{key: last_row.get(key) for key in schema.FINAL_METRICS},
        "iwae_samples": run.eval.iwae_samples,
        "collapse_epoch": collapse_epochs(kl_history, run.eval.collapse_threshold),
        "kl_per_dim": list(kl_history[-1]) if kl_history else [],
        **extra,
    }
    unknown = set(summary) - set(schema.SUMMARY_KEYS)
    if unknown:  # a key the schema does not name would be read by nothing
        raise ValueError(f"summary.json keys not in the schema: {sorted(unknown)}")
    storage.write_json(folder / schema.SUMMARY, summary)
    storage.remove_checkpoints(folder)
    return summary


def collapse_epochs(history: Sequence[Sequence[float]], epsilon: float) -> list[int | None]:
    """Per dimension, the first epoch (1-based) after which its KL stays below ε; None if never."""
    if not history:
        return []
    kl = np.asarray(history)  # (E, D)
    below = kl < epsilon
    out: list[int | None] = []
    for j in range(kl.shape[1]):
        stays = np.logical_and.accumulate(below[::-1, j])[::-1]  # True where below from here on
        out.append(int(np.argmax(stays)) + 1 if stays.any() else None)
    return out
