"""Sentence corpora the text tests write: no network, seconds to train on."""

from __future__ import annotations

import random
from pathlib import Path

#: Words all chains share: each chain is its own table of two successors per word.
CHAIN_WORDS = 8


def markov_sentences(count: int, chains: int, seed: int, draw_seed: int = 0) -> list[str]:
    """Each sentence from one of `chains` small Markov chains, chosen at random per sentence.

    The chain is a sentence's one global fact: an LSTM decoder can infer it from the sentence's
    first words (so it can do without z), but until it has, only z tells it — the setting in
    which a plain VAE collapses and free bits keep a unit alive to carry the chain.
    """
    rng = random.Random(seed)  # the chains: the same for every split of a corpus
    words = [f"w{i}" for i in range(CHAIN_WORDS)]
    tables = [{w: rng.sample(words, 2) for w in words} for _ in range(chains)]
    rng = random.Random(f"{seed}/{draw_seed}")  # the sentences: one draw per split
    out = []
    for _ in range(count):
        table = tables[rng.randrange(chains)]
        word = rng.choice(list(table))
        sentence = [word]
        for _ in range(rng.randint(3, 8)):
            word = rng.choice(table[word])
            sentence.append(word)
        out.append(" ".join(sentence))
    return out


def write_corpus(
    folder: Path, train: int = 600, test: int = 120, chains: int = 4, seed: int = 0
) -> Path:
    """train.txt, valid.txt and test.txt of Markov sentences in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train.txt": train, "valid.txt": test, "test.txt": test}
    for i, (name, n) in enumerate(sizes.items()):
        (folder / name).write_text("\n".join(markov_sentences(n, chains, seed, i)) + "\n")
    return folder
