"""A pack of K MLP VAEs trained as one model: every weight has a leading K axis.

Member k's forward pass touches only slice k of every parameter, so K runs train side by side in
the same kernels (`torch.baddbmm`) without influencing each other; Adam is element-wise, so one
optimizer over the stacked parameters updates each member exactly as its own optimizer would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .likelihoods import Likelihood, likelihood

ACTIVATIONS = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "elu": F.elu,
    "gelu": F.gelu,
    "softplus": F.softplus,
    "leaky_relu": F.leaky_relu,
}


class PackedLinear(nn.Module):
    """K independent affine maps: (K, B, in) -> (K, B, out)."""

    def __init__(self, members: int, fan_in: int, fan_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(members, 1, fan_out)) if bias else None

    def reset(self, generators: Sequence[torch.Generator], bound: float | None = None) -> None:
        """nn.Linear's default init, U(±1/√fan_in) for weight and bias (or U(±bound)), drawn per
        member."""
        bound = 1.0 / math.sqrt(self.weight.shape[1]) if bound is None else bound
        with torch.no_grad():
            for k, gen in enumerate(generators):
                self.weight[k].uniform_(-bound, bound, generator=gen)
                if self.bias is not None:
                    self.bias[k].uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


class PackedVAE(nn.Module):
    """Gaussian encoder q(z|x) = N(μ, diag σ²), N(0, I) prior, decoder p(x|z) of `likelihood`
    (Bernoulli logits by default)."""

    def __init__(
        self,
        members: int,
        input_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        activation: str,
        lik: Likelihood | None = None,
    ) -> None:
        super().__init__()
        self.members, self.input_dim, self.latent_dim = members, input_dim, latent_dim
        self.act = ACTIVATIONS[activation]
        self.likelihood = lik or likelihood("bernoulli")
        widths = [input_dim, *hidden]
        self.encoder = nn.ModuleList(
            PackedLinear(members, a, b) for a, b in itertools.pairwise(widths)
        )
        self.to_stats = PackedLinear(members, widths[-1], 2 * latent_dim)
        back = [latent_dim, *reversed(hidden)]
        self.decoder = nn.ModuleList(
            PackedLinear(members, a, b) for a, b in itertools.pairwise(back)
        )
        self.to_logits = PackedLinear(members, back[-1], self.likelihood.outputs * input_dim)

    def layers(self) -> list[PackedLinear]:
        return [*self.encoder, self.to_stats, *self.decoder, self.to_logits]

    def reset(self, generators: Sequence[torch.Generator]) -> None:
        for layer in self.layers():
            layer.reset(generators)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B, P) -> μ, log σ², each (K, B, D)."""
        h = x
        for layer in self.encoder:
            h = self.act(layer(h))
        mu, logvar = self.to_stats(h).chunk(2, dim=-1)
        return mu, logvar

    def decode(
        self, z: torch.Tensor, x: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(K, B, D) -> likelihood parameters (K, B, Q·P) (Bernoulli: logits (K, B, P))."""
        h = z
        for layer in self.decoder:
            h = self.act(layer(h))
        return self.to_logits(h)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z), summed over pixels: (..., Q·P), (..., P) -> (...)."""
        return self.likelihood.nll(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1]."""
        return self.likelihood.mean(params)
