"""Sentence corpora as token ids: one whitespace-tokenised sentence per line (Bowman et al. 2016;
He et al. 2019's PTB, Yahoo and Yelp files).

The vocabulary comes from the training file alone: `<pad> <s> </s> <unk>`, then tokens by falling
count (ties alphabetical, so it is the same on every machine), at most `max_vocab`, each seen at
least `min_count` times; any other token becomes `<unk>`. A sentence is stored as its words and
`</s>`, padded with `<pad>` (id 0) to the longest kept sentence.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..spec import DatasetSpec
from .dataset import EOS, PAD, SPECIALS, UNK, Dataset, class_ids, subset_rows

#: File names of a corpus folder, by split: ours first, then PTB's (Mikolov's `ptb.*.txt`).
SPLIT_FILES = {
    "train": ("train.txt", "ptb.train.txt"),
    "valid": ("valid.txt", "ptb.valid.txt"),
    "test": ("test.txt", "ptb.test.txt"),
}


def corpus_files(spec: DatasetSpec) -> dict[str, Path]:
    """The train/valid/test files a text spec names: its own paths, else those in `data_dir`."""
    files: dict[str, Path] = {}
    for split, names in SPLIT_FILES.items():
        given = getattr(spec, split)
        if given:
            files[split] = Path(given)
            continue
        if not spec.data_dir:
            raise DataError(
                f"dataset.{split}: text needs a corpus: --data-dir FOLDER holding train.txt, "
                "valid.txt and test.txt (one sentence per line), or dataset.train/valid/test paths"
            )
        folder = Path(spec.data_dir)
        found = [folder / n for n in names if (folder / n).is_file()]
        if not found:
            raise DataError(f"dataset.data_dir: {folder} holds no {' or '.join(names)}")
        files[split] = found[0]
    return files


def read_sentences(path: Path, strip_label: bool) -> list[list[str]]:
    """The non-empty lines of a UTF-8 file, split on whitespace; a `label<TAB>` prefix dropped
    when asked (the Yelp and Yahoo files of He et al. 2019 carry one)."""
    return read_labelled(path, strip_label)[0]


def read_labelled(path: Path, strip_label: bool) -> tuple[list[list[str]], list[str] | None]:
    """`read_sentences`, and each kept line's label when asked to strip them and every kept line
    has one (else None)."""
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    sentences, labels, unlabelled = [], [], False
    for line in text.splitlines():
        label = None
        if strip_label and "\t" in line:
            label, line = line.split("\t", 1)
        words = line.split()
        if words:
            sentences.append(words)
            labels.append(label.strip() if label is not None else "")
            unlabelled |= label is None or not label.strip()
    if not sentences:
        raise DataError(f"{path}: holds no sentence (every line is empty)")
    return sentences, None if unlabelled or not strip_label else labels


def build_vocab(
    sentences: list[list[str]], max_vocab: int | None, min_count: int
) -> tuple[str, ...]:
    """SPECIALS, then the training tokens seen at least `min_count` times, most frequent first,
    `max_vocab` in all (specials included) when set."""
    counts = Counter(word for sentence in sentences for word in sentence)
    for special in SPECIALS:
        counts.pop(special, None)  # a corpus's own `<unk>` (PTB has them) is our <unk>
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_vocab is not None:
        ranked = ranked[: max(0, max_vocab - len(SPECIALS))]
    return SPECIALS + tuple(ranked)


def encode(
    sentences: list[list[str]], vocab: tuple[str, ...], max_length: int | None, long: str
) -> tuple[np.ndarray, int, int]:
    """Token ids (N, T), T = longest kept sentence + 1 (`</s>`), 0-padded; and how many sentences
    were longer than `max_length` words (dropped, or cut to `max_length` words: `long`)."""
    ids, too_long, _ = encode_rows(sentences, vocab, max_length, long)
    return ids, too_long, len(ids)


def encode_rows(
    sentences: list[list[str]], vocab: tuple[str, ...], max_length: int | None, long: str
) -> tuple[np.ndarray, int, list[int]]:
    """`encode`, with the index of each kept sentence in `sentences` (its label follows it)."""
    index = {w: i for i, w in enumerate(vocab)}
    kept, rows, too_long = [], [], 0
    for row, words in enumerate(sentences):
        if max_length is not None and len(words) > max_length:
            too_long += 1
            if long == "drop":
                continue
            words = words[:max_length]
        kept.append([index.get(w, UNK) for w in words] + [EOS])
        rows.append(row)
    width = max((len(s) for s in kept), default=0)
    ids = np.full((len(kept), width), PAD, dtype=np.int64)
    for line, sentence in zip(ids, kept, strict=False):
        line[: len(sentence)] = sentence
    return ids, too_long, rows


def load_text(spec: DatasetSpec) -> Dataset:
    files = corpus_files(spec)
    read = {split: read_labelled(path, spec.strip_label) for split, path in files.items()}
    raw = {split: sentences for split, (sentences, _) in read.items()}
    vocab = build_vocab(raw["train"], spec.max_vocab, spec.min_count)
    arrays, labels, notes = {}, {}, []
    for split, sentences in raw.items():
        ids, too_long, rows = encode_rows(sentences, vocab, spec.max_length, spec.long_sentences)
        names = read[split][1]
        labels[split] = None if names is None else [names[r] for r in rows]
        if not rows:
            raise DataError(
                f"{files[split]}: no sentence within dataset.max_length={spec.max_length} words"
            )
        if too_long:
            verb = "dropped" if spec.long_sentences == "drop" else "cut to"
            notes.append(
                f"{files[split].name}: {too_long} of {len(sentences)} sentences longer than "
                f"{spec.max_length} words {verb}{'' if verb == 'dropped' else f' {spec.max_length}'}"
            )
        arrays[split] = ids
    train_rows = subset_rows(len(arrays["train"]), spec.train_size, "train_size")
    x_train = arrays["train"][train_rows]
    # Held-out sets sorted by length, so evaluation chunks hold sentences of similar lengths.
    test_rows = np.arange(len(arrays["test"]))[
        subset_rows(len(arrays["test"]), spec.test_size, "test_size")
    ]
    test_rows = test_rows[_by_length(arrays["test"][test_rows])]
    x_test = arrays["test"][test_rows]
    arrays["valid"] = arrays["valid"][_by_length(arrays["valid"])]
    width = max(a.shape[1] for a in (x_train, x_test, arrays["valid"]))
    x_train, x_test, x_valid = (_pad_to(a, width) for a in (x_train, x_test, arrays["valid"]))
    ids = None
    if labels["train"] is not None and labels["test"] is not None:
        ids = class_ids(
            list(np.asarray(labels["train"], dtype=object)[train_rows]),
            [labels["test"][r] for r in test_rows],
        )
    y_train, y_test = ids if ids is not None else (None, None)
    return Dataset(
        "text",
        x_train,
        x_test,
        (width,),
        vocab=vocab,
        x_valid=x_valid,
        notes=tuple(notes),
        y_train=y_train,
        y_test=y_test,
    )


def _by_length(ids: np.ndarray) -> np.ndarray:
    """The order of sentences by length (stable)."""
    return np.argsort((ids != PAD).sum(1), kind="stable")


def _pad_to(ids: np.ndarray, width: int) -> np.ndarray:
    return np.pad(ids, ((0, 0), (0, width - ids.shape[1])), constant_values=PAD)


def detokenize(ids: np.ndarray | list[int], vocab: tuple[str, ...] | list[str]) -> str:
    """Token ids -> the sentence they spell, up to its `</s>` (padding and `<s>` left out)."""
    words = []
    for i in ids:
        i = int(i)
        if i in (EOS, PAD):
            break
        if 0 <= i < len(vocab) and i > EOS:
            words.append(vocab[i])
    return " ".join(words)
