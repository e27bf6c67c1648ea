"""BN-VAE (Zhu et al. 2020, "A batch normalized inference network keeps the KL vanishing away"):
batch normalisation of the posterior means with a fixed scale γ, around any packed model.

Each latent unit's μ_j is normalised over the batch and scaled by a γ that is not trained, with a
learned shift β_j (torch's `BatchNorm1d` with its weight frozen at γ, as their code does). The
batch mean of μ_j² is then β_j² + γ²·v_j/(v_j + ε) ≈ β_j² + γ², and since KL_bj ≥ ½ μ_bj²
(σ² − log σ² − 1 ≥ 0), the batch-mean KL is at least ½ Σ_j (β_j² + γ² v_j/(v_j + ε)) ≈ D·γ²/2:
a floor on the rate like free bits, which holds on the batch statistics. At evaluation μ is
normalised with running statistics (momentum 0.1, the unbiased batch variance), as
`BatchNorm1d.eval()` does in their code, so test numbers do not depend on the test batch.

The running statistics are stored as parameters that take no gradient rather than as buffers:
every member's slice then travels with its weights through checkpoints, best-model snapshots,
member views and the CUDA-graph warm-up undo, which all handle parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: torch.nn.BatchNorm1d's defaults, which Zhu et al.'s code keeps.
EPS = 1e-5
MOMENTUM = 0.1


class MuNormalised(nn.Module):
    """A packed model whose encoder's μ (K, B, D) is batch-normalised with a fixed scale γ."""

    def __init__(self, inner: nn.Module, gamma: float) -> None:
        super().__init__()
        self.inner, self.gamma = inner, float(gamma)
        shape = (inner.members, 1, inner.latent_dim)  # type: ignore[arg-type]
        self.shift = nn.Parameter(torch.zeros(shape))
        self.running_mean = nn.Parameter(torch.zeros(shape), requires_grad=False)
        self.running_var = nn.Parameter(torch.ones(shape), requires_grad=False)

    def __getattr__(self, name: str) -> Any:
        """The inner model's attributes and methods (`members`, `decode`, `to_logits`, …)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def reset(self, generators: Sequence[torch.Generator]) -> None:
        """The inner model's initialisation (the same draws as without BN), then BatchNorm's:
        shift 0, running mean 0, running variance 1."""
        self.inner.reset(generators)  # type: ignore[operator]
        with torch.no_grad():
            self.shift.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1.0)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.inner.encode(x)  # type: ignore[operator]
        return self.normalise(mu), logvar

    def normalise(self, mu: torch.Tensor) -> torch.Tensor:
        """(K, B, D) -> γ·(μ − mean)/√(var + ε) + β, per member over its own batch (training) or
        with the running statistics (evaluation)."""
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            mean = mu.mean(-2, keepdim=True)
            var = mu.var(-2, correction=0, keepdim=True)  # BatchNorm normalises by the biased one
            rows = mu.shape[-2]
            with torch.no_grad():  # ... and tracks the unbiased one (torch's BatchNorm1d)
                unbiased = var.detach() * (rows / max(rows - 1, 1))
                self.running_mean.mul_(1 - MOMENTUM).add_(MOMENTUM * mean.detach())
                self.running_var.mul_(1 - MOMENTUM).add_(MOMENTUM * unbiased)
        return self.gamma * (mu - mean) / torch.sqrt(var + EPS) + self.shift


def kl_floor(shift: torch.Tensor, variance: torch.Tensor, gamma: float) -> torch.Tensor:
    """Zhu et al. 2020's lower bound on a batch's mean KL (nats per example) from the batch
    variance v of the unnormalised μ (K, 1, D): ½ Σ_j (β_j² + γ² v_j/(v_j + ε)), shape (K,)."""
    return 0.5 * (shift.pow(2) + gamma**2 * variance / (variance + EPS)).sum((-2, -1))
