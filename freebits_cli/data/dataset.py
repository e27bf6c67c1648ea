"""What every data set is: train, test (and, for text, validation) examples as NumPy arrays, and a
description of one example that models, the step, the metrics and the report read instead of
assuming pixels.

The trainer puts a whole data set on the device as one tensor, so loaders return arrays and never
a DataLoader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

#: Seed of everything fixed at the data-set level (digits split, static binarisation, test-set
#: binarisation, subsets), so every run of a sweep sees the same data whatever its own seed.
DATA_SEED = 20_141_220
#: Token ids every vocabulary starts with; padding is id 0, so a sequence's mask is `x != PAD`.
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


@dataclass(frozen=True)
class Dataset:
    """Examples of one data set.

    Images: float32 (N, P) in [0, 1], P = prod(image_shape). Text: int64 (N, T) token ids of each
    sentence's words and its `</s>`, padded with `PAD` (0) to the longest sentence, T; the
    decoder's inputs (`<s>` and the words) are built from these by the model.
    """

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    image_shape: tuple[int, ...]  # one example: (H, W), (C, H, W), (P,) flat; text (T,)
    binarize: str = "none"
    eight_bit: bool = False  # every pixel is k/255 for an integer k (before binarisation)
    dequantize: str = "none"  # uniform: the test set holds (k + u)/256, training adds its own u
    vocab: tuple[str, ...] = ()  # text: the token of each id, SPECIALS first; () for images
    x_valid: np.ndarray | None = None  # text: valid.txt; images: dataset.valid_size held out
    notes: tuple[str, ...] = ()  # what loading changed that a user should hear (one line each)
    #: Class labels (int64, 0..C-1) of x_train and x_test where the data has them: never trained
    #: on, only read by the linear probe of the posterior means.
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    #: Images binarised or dequantised at load: the test images as they were before, shown above
    #: the reconstructions (the model is scored on `x_test`); None where `x_test` is them.
    x_test_shown: np.ndarray | None = None

    @property
    def is_text(self) -> bool:
        return bool(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def cache_dir() -> Path:
    """Where downloads go: $FREEBITS_DATA, else ~/.cache/freebits."""
    return Path(os.environ.get("FREEBITS_DATA", Path.home() / ".cache" / "freebits"))


def subset(x: np.ndarray, size: int | None, field: str) -> np.ndarray:
    """A seeded random subset of `size` examples (in their original order), the same for every run
    of a sweep; None keeps them all."""
    return x[subset_rows(len(x), size, field)]


def subset_rows(n: int, size: int | None, field: str) -> slice | np.ndarray:
    """The rows `subset` keeps of n examples (labels follow their examples through it)."""
    if size is None or size == n:
        return slice(None)
    if size > n:
        raise DataError(f"dataset.{field}: {size} is more than the {n} examples there are")
    keep = np.random.default_rng([DATA_SEED, n]).permutation(n)[:size]
    return np.sort(keep)


def hold_out(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the rest, a seeded random validation set of `size` examples), each in original order."""
    rest, held = hold_out_rows(len(x), size)
    return x[rest], x[held]


def hold_out_rows(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows `hold_out` keeps for training and holds out, of n examples."""
    if size >= n:
        raise DataError(
            f"dataset.valid_size: {size} leaves none of the {n} training examples to train on"
        )
    order = np.random.default_rng([DATA_SEED, n, 1]).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


def class_ids(train: list[str], test: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Text labels as class ids (sorted names of the training labels); None when the test set
    holds a label the training set lacks (the probe could not be scored on it)."""
    names = sorted(set(train))
    index = {name: i for i, name in enumerate(names)}
    if not set(test) <= index.keys() or len(names) < 2:
        return None
    return (
        np.array([index[v] for v in train], dtype=np.int64),
        np.array([index[v] for v in test], dtype=np.int64),
    )
