"""Data sets, images and text, behind one registry: `load_dataset(spec)` -> `Dataset`."""

from __future__ import annotations

from ..spec import DatasetSpec
from .dataset import BOS, DATA_SEED, EOS, PAD, SPECIALS, UNK, Dataset, cache_dir, subset
from .images import find_idx, load_images, read_cifar_batch, read_idx, torchvision_images
from .text import detokenize, load_text

__all__ = [
    "BOS",
    "DATA_SEED",
    "EOS",
    "PAD",
    "SPECIALS",
    "UNK",
    "Dataset",
    "cache_dir",
    "detokenize",
    "find_idx",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
    "subset",
    "torchvision_images",
]


def load_dataset(spec: DatasetSpec) -> Dataset:
    """The data set a run's `dataset:` section names (DataError, one line, when it cannot be read)."""
    return load_text(spec) if spec.name == "text" else load_images(spec)
