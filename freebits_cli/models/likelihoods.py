"""Decoder likelihoods p(x|z): the negative log-likelihood of data under decoder outputs, and the
decoder's mean image (for reconstructions and samples in the report)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of a Bernoulli decoder, summed over pixels: (..., P) -> (...).

    With logits, never sigmoid-then-BCE: `binary_cross_entropy_with_logits` is stable for any z.
    For grayscale targets this is the usual summed cross-entropy, not a likelihood.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """The decoder's mean image in [0, 1]: (..., P) -> (..., P)."""
    return torch.sigmoid(logits)
