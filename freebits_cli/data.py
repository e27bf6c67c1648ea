"""Data sets as two float arrays in [0, 1], flattened: the bundled digits, (Fashion-)MNIST, `.npz`.

The trainer puts a whole data set on the device as one tensor, so this module returns NumPy arrays
and never a DataLoader.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .spec import DatasetSpec

#: Seed of everything fixed at the data-set level (digits split, static binarisation, test-set
#: binarisation), so every run of a sweep sees the same data whatever its own seed.
DATA_SEED = 20_141_220
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SYSTEM_DIRS = {"fashion-mnist": ["/usr/share/datasets/fashion-mnist"], "mnist": []}


@dataclass(frozen=True)
class Dataset:
    """Train and test images, float32 in [0, 1], shape (N, P); `image_shape` to draw them."""

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    image_shape: tuple[int, ...]
    binarize: str


def cache_dir() -> Path:
    """Where downloads go: $FREEBITS_DATA, else ~/.cache/freebits."""
    return Path(os.environ.get("FREEBITS_DATA", Path.home() / ".cache" / "freebits"))


def load_dataset(spec: DatasetSpec) -> Dataset:
    if spec.name == "digits":
        x_train, x_test, shape = _load_digits()
    elif spec.name.endswith(".npz"):
        x_train, x_test, shape = _load_npz(Path(spec.name))
    else:
        x_train, x_test, shape = _load_idx_dataset(spec.name, spec.data_dir)
    rng = np.random.default_rng(DATA_SEED)
    if spec.binarize in ("static", "dynamic"):
        # The test set is binarised once either way, and first, so static and dynamic runs are
        # scored on the very same targets.
        x_test = (rng.random(x_test.shape, dtype=np.float32) < x_test).astype(np.float32)
    if spec.binarize == "static":
        # One fixed Bernoulli sample of the grayscale images (stochastic binarisation, sampled once).
        x_train = (rng.random(x_train.shape, dtype=np.float32) < x_train).astype(np.float32)
    return Dataset(spec.name, x_train, x_test, shape, spec.binarize)


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    from sklearn.datasets import load_digits

    images = load_digits().data.astype(np.float32) / 16.0  # pixel values are 0..16
    order = np.random.default_rng(DATA_SEED).permutation(len(images))
    n_test = len(images) // 5  # a fixed 80/20 split: digits ships none
    return images[order[n_test:]], images[order[:n_test]], (8, 8)


def _to_unit_float(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.reshape(len(array), -1).astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{where}: expected uint8 0-255 or float 0-1, got dtype {array.dtype}")
    flat = array.reshape(len(array), -1).astype(np.float32)
    if not np.isfinite(flat).all() or flat.min(initial=0) < 0 or flat.max(initial=0) > 1:
        raise DataError(f"{where}: float pixels must be finite and within [0, 1]")
    return flat


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x_train", "x_test") if k not in archive]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
            raw_train, raw_test = archive["x_train"], archive["x_test"]
    except DataError:
        raise
    except Exception as exc:  # corrupt zip, pickled objects, ...
        if isinstance(exc, ValueError) and "pickle" in str(exc):
            why = "it holds Python objects, which are never loaded"
        else:
            why = exc.__class__.__name__
        raise DataError(f"{path}: cannot read as .npz ({why})") from None
    for key, array in (("x_train", raw_train), ("x_test", raw_test)):
        if array.ndim < 2 or len(array) == 0:
            raise DataError(f"{path}: {key} must have shape (N, ...) with N > 0, got {array.shape}")
    if raw_train[0].size == 0:
        raise DataError(f"{path}: images have no pixels (shape {raw_train.shape})")
    if raw_train[0].size != raw_test[0].size:
        raise DataError(f"{path}: x_train and x_test images differ in size")
    shape = raw_train.shape[1:] if raw_train.ndim == 3 else (raw_train[0].size,)
    return (
        _to_unit_float(raw_train, f"{path}:x_train"),
        _to_unit_float(raw_test, f"{path}:x_test"),
        shape,
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (LeCun's MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file (header cut short)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file (expected shape {dims})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(folder: Path, split: str) -> Path | None:
    """The IDX image file of a split in `folder` or the sub-folders torchvision uses."""
    for sub in ("", "raw", "MNIST/raw", "FashionMNIST/raw"):
        for stem in IDX_FILES[split]:
            for suffix in ("", ".gz"):
                candidate = folder / sub / (stem + suffix)
                if candidate.is_file():
                    return candidate
    return None


def _load_idx_dataset(
    name: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    folders = [Path(data_dir)] if data_dir else [Path(p) for p in SYSTEM_DIRS[name]] + [cache_dir()]
    for folder in folders:
        train, test = find_idx(folder, "train"), find_idx(folder, "test")
        if train and test:
            x_train, x_test = read_idx(train), read_idx(test)
            if x_train.shape[1:] != x_test.shape[1:]:
                raise DataError(f"{train} and {test}: images differ in size")
            shape = tuple(x_train.shape[1:])
            return _to_unit_float(x_train, str(train)), _to_unit_float(x_test, str(test)), shape
    expected = f"{IDX_FILES['train'][0]}[.gz] and {IDX_FILES['test'][0]}[.gz]"
    if data_dir:
        raise DataError(f"dataset.data_dir: {data_dir} does not hold {expected} for {name}")
    try:
        x_train, x_test = torchvision_images(name, cache_dir(), download=True)
    except Exception as exc:
        raise DataError(
            f"{name}: not found locally and download failed ({exc.__class__.__name__}); "
            f"put {expected} in a folder and pass --data-dir FOLDER"
        ) from None
    return _to_unit_float(x_train, name), _to_unit_float(x_test, name), (28, 28)


def torchvision_images(name: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """(Fashion-)MNIST through torchvision: files under root/<MNIST|FashionMNIST>/raw."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_NAMES[name])
    train = cls(root=str(root), train=True, download=download)
    test = cls(root=str(root), train=False, download=download)
    return train.data.numpy(), test.data.numpy()
