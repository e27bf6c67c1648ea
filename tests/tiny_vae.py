"""A user's own VAE for the tests (and README's example): the contract of `model.module`."""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyVAE(nn.Module):
    """Conv encoder, dense decoder; `outputs` likelihood parameters per pixel."""

    def __init__(
        self, input_shape: tuple[int, ...], latent_dim: int, outputs: int, width: int = 16
    ) -> None:
        super().__init__()
        channels, height, w = input_shape
        self.out_shape = (outputs * channels, height, w)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten()
        )
        self.stats = nn.Linear(8 * (height // 2) * (w // 2), 2 * latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, width), nn.Tanh(), nn.Linear(width, math.prod(self.out_shape))
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.stats(self.encoder(x)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(-1, *self.out_shape)


class WrongDecoder(TinyVAE):
    """Returns one image row short of the likelihood's parameters."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return super().decode(z)[:, :, 1:]


class WithBatchNorm(TinyVAE):
    def __init__(self, input_shape: tuple[int, ...], latent_dim: int, outputs: int) -> None:
        super().__init__(input_shape, latent_dim, outputs)
        self.norm = nn.BatchNorm1d(latent_dim)
