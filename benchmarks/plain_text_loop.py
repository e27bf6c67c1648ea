"""The plain PyTorch loop a text sweep is compared against (`contention.py`): an LSTM VAE (Bowman
et al. 2016) trained run after run, written the usual way.

The same shape as the benchmark's freebits text sweep: vocabulary of the training file (at most
`--max-vocab` words, `<pad> <s> </s> <unk>`), embeddings 128, one-layer LSTM encoder 128 →
μ, log σ² of 16 latents, an LSTM decoder 128 fed z at its input and its initial state, teacher
forcing, `</s>` predicted and counted; batch 64 of length-sorted padded sentences, Adam 1e-3, batch
free bits (Kingma et al. 2016) λ per run, one test ELBO per epoch. Padding enters no loss.

Run: python benchmarks/plain_text_loop.py --corpus CORPUS_DIR [--lambdas 0,0.25,0.5,1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PAD, BOS, EOS, UNK = 0, 1, 2, 3
BATCH, EMBED, HIDDEN, LATENT = 64, 128, 128, 16


def read(path: Path, limit: int) -> list[list[str]]:
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return lines[:limit] if limit else lines


def vocabulary(train: list[list[str]], max_vocab: int) -> dict[str, int]:
    words = [w for w, _ in Counter(w for s in train for w in s).most_common(max_vocab)]
    return {w: i + 4 for i, w in enumerate(words)}


def tensor(sentences: list[list[str]], vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T+1) ids with `</s>` at each end and padding after it, and the lengths (with `</s>`)."""
    lengths = torch.tensor([len(s) + 1 for s in sentences])
    ids = torch.full((len(sentences), int(lengths.max())), PAD)
    for i, s in enumerate(sentences):
        ids[i, : len(s) + 1] = torch.tensor([vocab.get(w, UNK) for w in s] + [EOS])
    return ids, lengths


class TextVAE(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, EMBED, padding_idx=PAD)
        self.encoder = nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.to_stats = nn.Linear(HIDDEN, 2 * LATENT)
        self.to_state = nn.Linear(LATENT, 2 * HIDDEN)
        self.decoder = nn.LSTM(EMBED + LATENT, HIDDEN, batch_first=True)
        self.out = nn.Linear(HIDDEN, vocab_size)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.encoder(packed)
        mu, logvar = self.to_stats(h[-1]).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        inputs = torch.cat([torch.full_like(ids[:, :1], BOS), ids[:, :-1]], 1)  # <s> w1 … wT
        x = torch.cat([self.embed(inputs), z.unsqueeze(1).expand(-1, ids.shape[1], -1)], -1)
        h0, c0 = torch.tanh(self.to_state(z)).unsqueeze(0).chunk(2, -1)
        out, _ = self.decoder(x, (h0.contiguous(), c0.contiguous()))
        nll = F.cross_entropy(
            self.out(out).transpose(1, 2), ids, ignore_index=PAD, reduction="none"
        ).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)  # (B, D), Kingma & Welling App. B
        return nll, kl


def batches(ids: torch.Tensor, lengths: torch.Tensor, shuffle: bool) -> Iterator[tuple]:
    order = torch.randperm(len(ids)) if shuffle else torch.arange(len(ids))
    for start in range(0, len(ids), BATCH):
        index = order[start : start + BATCH]
        width = int(lengths[index].max())
        yield ids[index, :width], lengths[index]


def train_run(lam: float, seed: int, epochs: int, data: dict) -> float:
    torch.manual_seed(seed)
    model = TextVAE(data["vocab_size"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    elbo = math.nan
    for _ in range(epochs):
        model.train()
        for ids, lengths in batches(*data["train"], shuffle=True):
            nll, kl = model(ids, lengths)
            kl_dim = kl.mean(0)
            loss = nll.mean() + (torch.clamp(kl_dim, min=lam) if lam else kl_dim).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        total = 0.0
        with torch.no_grad():
            for ids, lengths in batches(*data["test"], shuffle=False):
                nll, kl = model(ids, lengths)
                total += float((nll + kl.sum(-1)).sum())
        elbo = -total / len(data["test"][0])
    return elbo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="train.txt and test.txt inside")
    parser.add_argument("--lambdas", default="0,0.25,0.5,1")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=0, help="first N sentences (0: all)")
    parser.add_argument("--test-size", type=int, default=0, help="first N test sentences (0: all)")
    parser.add_argument("--max-vocab", type=int, default=10000)
    parser.add_argument("--result", default=None, help="write the final test ELBOs here (JSON)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train = read(args.corpus / "train.txt", args.train_size)
    vocab = vocabulary(train, args.max_vocab)
    data = {
        "train": tensor(train, vocab),
        "test": tensor(read(args.corpus / "test.txt", args.test_size), vocab),
        "vocab_size": len(vocab) + 4,
    }
    elbos = {lam: train_run(float(lam), 0, args.epochs, data) for lam in args.lambdas.split(",")}
    seconds = time.perf_counter() - started
    print(f"{len(elbos)} runs in {seconds:.1f} s; test ELBO {elbos}")
    if args.result:
        Path(args.result).write_text(
            json.dumps({"test_elbo": elbos, "threads": torch.get_num_threads()})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
