"""The CUDA suite (`pytest -m cuda`): skipped, with the reason, where no GPU is visible; shared
helpers to train small sweeps in this process and compare their files.

Every test here that needs a GPU carries the `cuda` marker (registered in pyproject.toml, where
plain `pytest` deselects it: `make test` stays CPU-only on a GPU box too). The other tests in this
folder rehearse on the CPU what can be checked without a GPU, and run with the rest of the suite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).parents[2]
#: Subprocesses find the package and the tests' user module (tests/tiny_vae.py) from the checkout.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
#: The folder `benchmarks/gpu_check.py --data-dir` hands on: Fashion-MNIST's IDX files.
DATA_ENV = "FREEBITS_GPU_CHECK_DATA"
#: Columns of metrics.csv that measure time, not numbers.
TIMING = ("seconds",)


def cuda_reason() -> str | None:
    """Why the CUDA tests cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"CUDA is not available (torch {torch.__version__}, {build}; no GPU visible)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = cuda_reason()
    for item in items:
        if reason and item.get_closest_marker("cuda"):
            item.add_marker(pytest.mark.skip(reason=reason))
        wanted = item.get_closest_marker("gpus")
        if wanted and torch.cuda.is_available() and torch.cuda.device_count() < wanted.args[0]:
            found = torch.cuda.device_count()
            item.add_marker(pytest.mark.skip(reason=f"needs {wanted.args[0]} GPUs, {found} seen"))


@pytest.fixture
def no_fallback() -> Iterator[list[str]]:
    """Every 'CUDA graph capture failed' warning raised while the test trains: must stay empty."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found: list[str] = []
        yield found
    found += [str(w.message) for w in caught if "graph capture failed" in str(w.message)]
    assert not found, found[0]


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


@pytest.fixture(scope="session")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,560 training and 512 test images of 28×28: 20 steps of batch 128 per epoch."""
    return write_npz(tmp_path_factory.mktemp("data") / "blobs.npz", 2560, 512)


@pytest.fixture(scope="session")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 10,000 training and 2,000 test images of Fashion-MNIST as an .npz."""
    from freebits_cli.data import load_dataset
    from freebits_cli.errors import FreebitsError
    from freebits_cli.spec import DatasetSpec

    try:
        data = load_dataset(DatasetSpec("fashion-mnist", os.environ.get(DATA_ENV) or None))
    except FreebitsError as exc:
        pytest.skip(f"Fashion-MNIST not found ({exc}); pass gpu_check.py --data-dir DIR")
    path = tmp_path_factory.mktemp("fashion") / "fashion-10k.npz"
    to_bytes = lambda x: np.round(x * 255).astype(np.uint8).reshape(-1, 28, 28)  # noqa: E731
    np.savez(path, x_train=to_bytes(data.x_train[:10000]), x_test=to_bytes(data.x_test[:2000]))
    return path


def train(
    out: Path,
    overrides: Sequence[tuple[str, Any]],
    device: str = "cuda",
    pack_size: int = 0,
    jobs: int = 1,
) -> Path:
    """Plan, prepare and train a sweep in this process; the sweep's folder."""
    from freebits_cli import executor
    from freebits_cli.spec_file import build_spec

    spec = build_spec(None, [("train.device", device), *overrides])
    plan = executor.plan(spec, out)
    executor.prepare(plan, spec)
    outcomes = executor.execute(plan, device, pack_size=pack_size, jobs=jobs)
    failed = [o for o in outcomes if o.state != "done"]
    assert not failed, failed
    return plan.sweep_dir


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
