"""Helpers of the CUDA suite: data made on the spot, sweeps trained in this process, files compared."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).parents[2]
#: Subprocesses find the package and the tests' user module (tests/tiny_vae.py) from the checkout.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
#: The folder `benchmarks/gpu_check.py --data-dir` hands on: Fashion-MNIST's IDX files.
DATA_ENV = "FREEBITS_GPU_CHECK_DATA"
#: The record folder `benchmarks/gpu_check.py` writes to: measurements go to its MEASUREMENTS file.
RECORD_ENV = "FREEBITS_GPU_CHECK_OUT"
MEASUREMENTS = "measurements.jsonl"
#: Columns of metrics.csv that measure time, not numbers.
TIMING = ("seconds",)


def write_npz(path: Path, n_train: int, n_test: int, side: int = 28, seed: int = 0) -> Path:
    """Images with structure (blurred blobs, 8-bit), so a VAE learns something in a few steps."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    grid = np.linspace(-1, 1, side)
    centres = rng.uniform(-0.6, 0.6, size=(n, 2, 1, 1))
    width = rng.uniform(0.15, 0.4, size=(n, 1, 1))
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    blob = np.exp(-((xx - centres[:, 0]) ** 2 + (yy - centres[:, 1]) ** 2) / (2 * width**2))
    images = np.round(255 * blob).astype(np.uint8)
    np.savez(path, x_train=images[:n_train], x_test=images[n_train:])
    return path


WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log", "quickly", "slowly"]


def write_text(folder: Path, sentences: int = 800) -> Path:
    """train/valid/test.txt of short random sentences (whitespace-tokenised, one per line)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", sentences), ("valid", 100), ("test", 100)):
        lines = []
        for _ in range(count):
            picks = rng.integers(len(WORDS), size=int(rng.integers(3, 12)))
            lines.append(" ".join(WORDS[i] for i in picks))
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


def train(
    out: Path,
    overrides: Sequence[tuple[str, Any]],
    device: str = "cuda",
    pack_size: int = 0,
    jobs: int = 1,
) -> Path:
    """Plan, prepare and train a sweep in this process; the sweep's folder."""
    import sweeps

    from freebits_cli.spec.files import build_spec

    spec = build_spec(None, [("train.device", device), *overrides])
    result = sweeps.run(spec, out, pack_size=pack_size, jobs=jobs)
    failed = [o for o in result.outcomes if o.state != "done"]
    assert not failed, failed
    return result.plan.sweep_dir


def summaries(sweep: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("runs/*/summary.json")}


def csv_without_timing(path: Path) -> list[list[str]]:
    """A CSV's rows as text, without the columns that measure time."""
    rows = [line.split(",") for line in path.read_text().splitlines()]
    drop = {i for i, name in enumerate(rows[0]) if name in TIMING}
    return [[v for i, v in enumerate(row) if i not in drop] for row in rows]


def same_files(a: Path, b: Path) -> None:
    """Every CSV of every run of sweep `a` equals sweep `b`'s, character for character (but time)."""
    files = sorted(p.relative_to(a) for p in a.glob("runs/*/*.csv"))
    assert files and files == sorted(p.relative_to(b) for p in b.glob("runs/*/*.csv"))
    for name in files:
        assert csv_without_timing(a / name) == csv_without_timing(b / name), name
