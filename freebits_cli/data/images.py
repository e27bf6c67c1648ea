"""Image data sets as two float arrays in [0, 1], flattened, with their image shape: the bundled
digits, (Fashion-)MNIST, CIFAR-10, `.npz`.

8-bit sources keep their values exactly, as k/255 (`eight_bit`), so a discretized likelihood can
recover the integer k; images keep their shape ((H, W) or (C, H, W)), which an MLP ignores and a
conv net uses.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..spec import DatasetSpec
from .dataset import DATA_SEED, Dataset, cache_dir, hold_out_rows, subset_rows

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    # Class labels beside the images, read for the linear probe where present.
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SYSTEM_DIRS = {"fashion-mnist": ["/usr/share/datasets/fashion-mnist"], "mnist": []}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_SHAPE = (3, 32, 32)


#: Class labels of a training and a test set (None where the data has none).
Labels = tuple[np.ndarray, np.ndarray] | None


def load_images(spec: DatasetSpec) -> Dataset:
    """An image data set as float arrays in [0, 1], subset, binarised or dequantised as asked."""
    eight_bit = True
    if spec.name == "digits":
        x_train, x_test, shape, labels = _load_digits()
        eight_bit = False
    elif spec.name.endswith(".npz"):
        x_train, x_test, shape, eight_bit, labels = _load_npz(Path(spec.name))
    elif spec.name == "cifar10":
        x_train, x_test, shape, labels = _load_cifar10(spec.data_dir)
    else:
        x_train, x_test, shape, labels = _load_idx_dataset(spec.name, spec.data_dir)
    y_train, y_test = labels if labels is not None else (None, None)
    x_valid = None
    if spec.valid_size is not None:  # held out of the training set, before any subset
        rest, held = hold_out_rows(len(x_train), spec.valid_size)
        x_train, x_valid = x_train[rest], x_train[held]
        y_train = None if y_train is None else y_train[rest]
    rows = subset_rows(len(x_train), spec.train_size, "train_size")
    x_train, y_train = x_train[rows], None if y_train is None else y_train[rows]
    rows = subset_rows(len(x_test), spec.test_size, "test_size")
    x_test, y_test = x_test[rows], None if y_test is None else y_test[rows]
    rng = np.random.default_rng(DATA_SEED)
    shown = x_test if spec.dequantize != "none" or spec.binarize != "none" else None
    if spec.dequantize == "uniform":
        # The test set is dequantised once, identically for every run: (k + u)/256 (Theis et al.
        # 2016). Training batches get fresh noise from each run's own stream in the trainer.
        x_test = (np.round(x_test * 255) + rng.random(x_test.shape, dtype=np.float32)) / 256
        x_test = x_test.astype(np.float32)
    if spec.binarize in ("static", "dynamic"):
        # The test set is binarised once either way, and first, so static and dynamic runs are
        # scored on the very same targets.
        x_test = (rng.random(x_test.shape, dtype=np.float32) < x_test).astype(np.float32)
    if spec.binarize == "static":
        # One fixed Bernoulli sample of the grayscale images (stochastic binarisation, sampled once).
        x_train = (rng.random(x_train.shape, dtype=np.float32) < x_train).astype(np.float32)
    return Dataset(
        spec.name,
        x_train,
        x_test,
        shape,
        spec.binarize,
        eight_bit,
        spec.dequantize,
        x_valid=x_valid,
        y_train=y_train,
        y_test=y_test,
        x_test_shown=shown,
    )


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[int, ...], Labels]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.data.astype(np.float32) / 16.0  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(DATA_SEED).permutation(len(images))
    n_test = len(images) // 5  # a fixed 80/20 split: digits ships none
    train, test = order[n_test:], order[:n_test]
    return images[train], images[test], (8, 8), (labels[train], labels[test])


def _to_unit_float(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:  # one float32 array, not a cast and then a quotient: the same
        # bits (float32 division either way), half the fresh memory, whose first touch is most of
        # the cost (Fashion-MNIST's 188 MB: 0.04-0.8 s against 1.1-1.3 s on a 2-core VM)
        return np.divide(array.reshape(len(array), -1), np.float32(255), dtype=np.float32)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{where}: expected uint8 0-255 or float 0-1, got dtype {array.dtype}")
    flat = array.reshape(len(array), -1).astype(np.float32)
    if not np.isfinite(flat).all() or flat.min(initial=0) < 0 or flat.max(initial=0) > 1:
        raise DataError(f"{where}: float pixels must be finite and within [0, 1]")
    return flat


def _is_eight_bit(array: np.ndarray) -> bool:
    """uint8, or floats that are all k/255 (as torchvision's ToTensor makes them)."""
    if array.dtype == np.uint8:
        return True
    scaled = array.astype(np.float64) * 255
    return bool(np.all(np.abs(scaled - np.round(scaled)) < 1e-4))


def _image_shape(array: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, H, W) -> (H, W); (N, C, H, W) or channels-last (N, H, W, C), C ≤ 4 -> (C, H, W);
    other shapes are flat (P,)."""
    if array.ndim == 3:
        return array, tuple(array.shape[1:])
    if array.ndim == 4 and array.shape[1] <= 4:
        return array, tuple(array.shape[1:])
    if array.ndim == 4 and array.shape[3] <= 4:
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2)), (
            array.shape[3],
            *array.shape[1:3],
        )
    return array, (array[0].size,)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], bool, Labels]:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x_train", "x_test") if k not in archive]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
            raw_train, raw_test = archive["x_train"], archive["x_test"]
            labels = _npz_labels(archive, len(raw_train), len(raw_test))
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
    channels_last = raw_train.ndim == 4 and raw_train.shape[1] > 4 and raw_train.shape[3] <= 4
    raw_train, shape = _image_shape(raw_train)
    if channels_last and raw_test.ndim == 4:
        raw_test = np.ascontiguousarray(raw_test.transpose(0, 3, 1, 2))
    train = _to_unit_float(raw_train, f"{path}:x_train")
    test = _to_unit_float(raw_test, f"{path}:x_test")
    return train, test, shape, _is_eight_bit(raw_train) and _is_eight_bit(raw_test), labels


def _npz_labels(archive: Any, n_train: int, n_test: int) -> Labels:
    """`y_train` and `y_test` of an .npz, when both are there as one integer per example."""
    if "y_train" not in archive or "y_test" not in archive:
        return None
    y_train, y_test = np.ravel(archive["y_train"]), np.ravel(archive["y_test"])
    if len(y_train) != n_train or len(y_test) != n_test or y_train.dtype.kind not in "iu":
        return None
    return _dense(y_train, y_test)


def _dense(y_train: np.ndarray, y_test: np.ndarray) -> Labels:
    """Labels as int64 class ids; None when the test set holds a class training never shows."""
    classes, train = np.unique(y_train, return_inverse=True)
    if not np.isin(y_test, classes).all():
        return None
    return train.astype(np.int64), np.searchsorted(classes, y_test).astype(np.int64)


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


def _idx_labels(folder: Path, n_train: int, n_test: int) -> Labels:
    """The IDX label files beside a folder's images, when both are there and match in count."""
    found = [
        folder / (stem + suffix)
        for split in ("train_labels", "test_labels")
        for stem in IDX_FILES[split]
        for suffix in ("", ".gz")
        if (folder / (stem + suffix)).is_file()
    ]
    train = next((p for p in found if p.name.startswith("train")), None)
    test = next((p for p in found if p.name.startswith("t10k")), None)
    if train is None or test is None:
        return None
    y_train, y_test = read_idx(train), read_idx(test)
    if y_train.shape != (n_train,) or y_test.shape != (n_test,):
        return None
    return y_train.astype(np.int64), y_test.astype(np.int64)


def _load_idx_dataset(
    name: str, data_dir: str | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], Labels]:
    folders = [Path(data_dir)] if data_dir else [Path(p) for p in SYSTEM_DIRS[name]] + [cache_dir()]
    for folder in folders:
        train, test = find_idx(folder, "train"), find_idx(folder, "test")
        if train and test:
            x_train, x_test = read_idx(train), read_idx(test)
            if x_train.shape[1:] != x_test.shape[1:]:
                raise DataError(f"{train} and {test}: images differ in size")
            shape = tuple(x_train.shape[1:])
            labels = _idx_labels(train.parent, len(x_train), len(x_test))
            return (
                _to_unit_float(x_train, str(train)),
                _to_unit_float(x_test, str(test)),
                shape,
                labels,
            )
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
    # torchvision leaves the raw IDX files, labels included, under the cache folder.
    raw = cache_dir() / TORCHVISION_NAMES[name] / "raw"
    labels = _idx_labels(raw, len(x_train), len(x_test))
    return _to_unit_float(x_train, name), _to_unit_float(x_test, name), (28, 28), labels


def torchvision_images(name: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """(Fashion-)MNIST through torchvision: files under root/<MNIST|FashionMNIST>/raw."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_NAMES[name])
    train = cls(root=str(root), train=True, download=download)
    test = cls(root=str(root), train=False, download=download)
    return train.data.numpy(), test.data.numpy()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's batches (dicts of bytes, lists and NumPy arrays) and nothing else: a
    pickle can run any code, so only the NumPy array constructors are let through."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path) -> np.ndarray:
    """One CIFAR-10 python batch: its b"data" array, (N, 3072) uint8 -> (N, 3, 32, 32)."""
    return _read_cifar(path)[0]


def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One CIFAR-10 python batch: its images (N, 3, 32, 32) and, where present, b"labels"."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # truncated, not a pickle, a forbidden class, ...
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise DataError(f"{path}: not a CIFAR-10 python batch ({why})") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    size = int(np.prod(CIFAR_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: no uint8 'data' array of shape (N, {size})")
    if data.shape[1] != size:
        raise DataError(
            f"{path}: images have {data.shape[1]} values, CIFAR-10 has {size} (3×32×32)"
        )
    labels = batch.get(b"labels", batch.get("labels"))
    labels = np.asarray(labels, dtype=np.int64) if isinstance(labels, list) else None
    if labels is not None and labels.shape != (len(data),):
        labels = None
    # Rows are 1024 red, 1024 green, 1024 blue: C, H, W.
    return data.reshape(-1, *CIFAR_SHAPE), labels


def find_cifar(folder: Path) -> Path | None:
    """The folder holding CIFAR-10's batches: `folder` itself or its cifar-10-batches-py/."""
    for candidate in (folder / CIFAR_FOLDER, folder):
        if all((candidate / name).is_file() for name in CIFAR_TRAIN + CIFAR_TEST):
            return candidate
    return None


def _load_cifar10(
    data_dir: str | None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], Labels]:
    """CIFAR-10 from torchvision's python batches: 50,000 train and 10,000 test images, 3×32×32."""
    folder = find_cifar(Path(data_dir)) if data_dir else find_cifar(cache_dir())
    expected = f"{CIFAR_FOLDER}/ with {', '.join(CIFAR_TRAIN + CIFAR_TEST)}"
    if folder is None and data_dir:
        raise DataError(f"dataset.data_dir: {data_dir} does not hold {expected} for cifar10")
    if folder is None:
        try:
            import torchvision

            torchvision.datasets.CIFAR10(root=str(cache_dir()), train=True, download=True)
        except Exception as exc:
            raise DataError(
                f"cifar10: not found locally and download failed ({exc.__class__.__name__}); "
                f"put {expected} in a folder and pass --data-dir FOLDER"
            ) from None
        folder = find_cifar(cache_dir())
        if folder is None:
            raise DataError(f"cifar10: the download did not leave {expected} in {cache_dir()}")
    batches = [_read_cifar(folder / name) for name in CIFAR_TRAIN]
    train = np.concatenate([images for images, _ in batches])
    test, y_test = _read_cifar(folder / CIFAR_TEST[0])
    y_parts = [y for _, y in batches]
    labels = None
    if y_test is not None and all(y is not None for y in y_parts):
        labels = (np.concatenate(y_parts), y_test)  # type: ignore[arg-type]
    where = str(folder)
    return _to_unit_float(train, where), _to_unit_float(test, where), CIFAR_SHAPE, labels
