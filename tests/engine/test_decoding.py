"""Sentences that show what z does: greedy and sampled decodes stop at `</s>`, sampling draws from
softmax(logits / T) with each member's own generator, and a text run writes both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sweeps
import torch
from text_corpus import write_corpus

from freebits_cli import schema
from freebits_cli.data import BOS, EOS, PAD, detokenize
from freebits_cli.engine.samples import greedy_decode, sample_decode
from freebits_cli.results.reader import SENTENCE_KEYS, read_sentences
from freebits_cli.spec.files import build_spec

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = ("<pad>", "<s>", "</s>", "<unk>", "a", "b", "c")


class Scripted:
    """A text 'model' whose next-token logits depend only on the position: word 4 + (t mod 3)
    until `stop`, then `</s>` — and after `</s>`, word `a` again, which a decoder must never
    write. `members` members, identical."""

    def __init__(self, members: int, stop: int, sharp: float = 20.0) -> None:
        self.members, self.stop, self.sharp = members, stop, sharp

    def decode(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k, b, steps = x.shape
        logits = torch.zeros(k, b, steps, len(VOCAB))
        for t in range(steps):
            best = EOS if t == self.stop else 4 + t % 3
            logits[..., t, best] = self.sharp
        return logits


def test_greedy_decoding_stops_at_the_end_of_sentence() -> None:
    ids = greedy_decode(Scripted(2, stop=3), torch.zeros(2, 4, 1), steps=10)
    assert ids.shape == (2, 4, 10)
    assert ids[0, 0].tolist() == [4, 5, 6, EOS] + [PAD] * 6  # nothing after `</s>`
    assert detokenize(ids[1, 3].numpy(), VOCAB) == "a b c"


def test_sampled_decoding_stops_at_the_end_of_sentence_and_follows_the_softmax() -> None:
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    ids = sample_decode(Scripted(2, stop=3), torch.zeros(2, 4, 1), 10, 1.0, gens)
    assert ids[:, :, 3].eq(EOS).all() and ids[:, :, 4:].eq(PAD).all()
    # Flat logits over a, b, c (sharp = 0): each draw is uniform over every token the decoder may
    # write (all but <pad> and <s>), so a, b, c and </s> each come up ~1/5 of the time; a low
    # temperature on sharp logits is the greedy decode.
    flat = sample_decode(Scripted(1, stop=99, sharp=0.0), torch.zeros(1, 2000, 1), 1, 1.0,
                         [torch.Generator().manual_seed(3)])  # fmt: skip
    counts = torch.bincount(flat[0, :, 0], minlength=len(VOCAB)).float() / 2000
    assert counts[PAD] == 0 and counts[BOS] == 0
    assert torch.allclose(counts[2:], torch.full((5,), 0.2), atol=0.04)
    cold = sample_decode(Scripted(2, stop=3, sharp=1.0), torch.zeros(2, 4, 1), 10, 0.01, gens)
    assert torch.equal(cold, greedy_decode(Scripted(2, stop=3), torch.zeros(2, 4, 1), 10))


def test_each_member_samples_from_its_own_stream() -> None:
    model = Scripted(2, stop=99, sharp=0.0)
    both = sample_decode(model, torch.zeros(2, 5, 1), 4, 1.0,
                         [torch.Generator().manual_seed(s) for s in (7, 8)])  # fmt: skip
    alone = sample_decode(Scripted(1, stop=99, sharp=0.0), torch.zeros(1, 5, 1), 4, 1.0,
                          [torch.Generator().manual_seed(8)])  # fmt: skip
    assert torch.equal(both[1], alone[0]) and not torch.equal(both[0], both[1])


def test_a_text_run_writes_greedy_and_sampled_sentences(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", train=200, test=40)
    spec = build_spec(None, [
        ("dataset.name", "text"), ("dataset.data_dir", str(corpus)), ("train.epochs", 1),
        ("grid.lambda", [1]),
        ("model.hidden", [16]), ("model.embedding_dim", 16), ("model.latent_dim", 2),
        ("eval.iwae_samples", 2), ("eval.samples", 3), ("eval.temperature", 0.7),
    ])  # fmt: skip
    assert sweeps.run(spec, tmp_path / "out").exit_code == 0
    (folder,) = (tmp_path / "out" / "default" / schema.RUNS_DIR).iterdir()
    sentences = read_sentences(folder, lambda m: None)
    assert sentences is not None and set(sentences) == set(SENTENCE_KEYS)
    for key in ("sampled_reconstructions", "sampled_prior_samples"):
        assert len(sentences[key]) == 3
        assert all("</s>" not in s and "<pad>" not in s for s in sentences[key])
    again = tmp_path / "again"
    sweeps.run(spec, again)
    (other,) = (again / "default" / schema.RUNS_DIR).iterdir()
    written = json.loads((folder / schema.SENTENCES).read_text())
    assert written == json.loads((other / schema.SENTENCES).read_text())  # seeded: reproducible
