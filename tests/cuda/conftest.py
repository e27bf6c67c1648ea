"""The CUDA suite (`pytest -m cuda`): skipped, with the reason, where no GPU is visible.

Every test here that needs a GPU carries the `cuda` marker (registered in pyproject.toml, where
plain `pytest` deselects it: `make test` stays CPU-only on a GPU box too). The other tests in this
folder rehearse on the CPU what can be checked without a GPU, and run with the rest of the suite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gpu_sweeps import DATA_ENV, MEASUREMENTS, RECORD_ENV, write_npz


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


@pytest.fixture(autouse=True)
def no_fallback(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Every 'CUDA graph capture failed' warning a CUDA test raises in this process fails it."""
    import warnings

    if request.node.get_closest_marker("cuda") is None:
        yield []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found: list[str] = []
        yield found
    found += [str(w.message) for w in caught if "graph capture failed" in str(w.message)]
    assert not found, found[0]


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


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`record(**values)`: keep a test's measurements in the gpu-check record (when there is one)."""

    def write(**values: Any) -> None:
        folder = os.environ.get(RECORD_ENV)
        if folder:
            line = json.dumps({"test": request.node.nodeid, **values}, default=float)
            with open(Path(folder) / MEASUREMENTS, "a") as handle:
                handle.write(line + "\n")

    return write
