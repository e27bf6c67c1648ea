"""A user's own text VAE for the tests: bag-of-words encoder, GRU decoder, the documented contract."""

from __future__ import annotations

import torch
from torch import nn


class TinyTextVAE(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], latent_dim: int, outputs: int) -> None:
        super().__init__()
        vocab, width = outputs, 8
        self.embed = nn.Embedding(vocab, width)
        self.to_stats = nn.Linear(width, 2 * latent_dim)
        self.from_z = nn.Linear(latent_dim, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.out = nn.Linear(width, vocab)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (x != 0).unsqueeze(-1).float()
        pooled = (self.embed(x) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.to_stats(pooled).chunk(2, dim=-1)

    def decode(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([torch.ones_like(x[:, :1]), x[:, :-1]], dim=1)  # <s> = 1, shifted
        h0 = torch.tanh(self.from_z(z)).unsqueeze(0)
        out, _ = self.gru(self.embed(inputs), h0)
        return self.out(out)
