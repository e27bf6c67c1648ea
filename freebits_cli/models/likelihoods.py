"""Decoder likelihoods p(x|z): the negative log-likelihood of data under decoder outputs, and the
decoder's mean image (for reconstructions and samples in the report).

Data arrive flat, (..., P) in [0, 1]; decoder outputs arrive flat too, (..., Q·P) laid out as Q
blocks of P (one block per parameter: Q = 1 Bernoulli, 2 logistic and Gaussian, 3M mixture), so
the metrics can reshape any model's outputs the same way. 8-bit pixels k are stored as k/255 and
mapped back to the integer exactly (rounding), so a discretized likelihood sees the true bins.
Text is the exception: token ids (..., T) and logits (..., T, V), scored by `categorical_nll`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..data.dataset import PAD

#: PixelCNN++ (Salimans et al. 2017, openai/pixel-cnn `nn.py`): log-scales are floored at -7.
LOG_SCALE_MIN = -7.0
HALF_BIN = 1.0 / 255.0  # half the width of a bin on the [-1, 1] scale (256 bins over width 2)
LOG_256 = math.log(256.0)
LN2 = math.log(2.0)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of a Bernoulli decoder, summed over pixels: (..., P) -> (...).

    With logits, never sigmoid-then-BCE: `binary_cross_entropy_with_logits` is stable for any z.
    For grayscale targets this is the usual summed cross-entropy, not a likelihood.
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """The decoder's mean image in [0, 1]: (..., P) -> (..., P)."""
    return torch.sigmoid(logits)


def to_symmetric(x: torch.Tensor) -> torch.Tensor:
    """8-bit pixels stored as k/255 -> the bin centre 2k/255 - 1 in [-1, 1] (PixelCNN++'s scale)."""
    return torch.round(x * 255.0) * (2.0 / 255.0) - 1.0


def log1mexp(t: torch.Tensor) -> torch.Tensor:
    """log(1 - e^t) for t < 0, accurate everywhere (Mächler 2012): log(-expm1 t) near 0, else
    log1p(-e^t). Each branch sees clamped inputs, so neither makes a NaN gradient through `where`."""
    t = t.clamp(max=-1e-30)
    near = torch.log(-torch.expm1(t.clamp(min=-LN2)))
    far = torch.log1p(-torch.exp(t.clamp(max=-LN2)))
    return torch.where(t > -LN2, near, far)


def logistic_log_mass(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of a discretized logistic for x on the [-1, 1] bin centres (PixelCNN++).

    Bin of x: [x - 1/255, x + 1/255]; x = -1 takes the whole lower tail, x = 1 the upper tail.
    Middle bins: σ(b) - σ(a) = σ(b)·σ(-a)·(1 - e^(a-b)), so log P = logσ(b) + logσ(-a) +
    log(1 - e^(a-b)), with a, b the standardised edges: exact and stable in both tails (unlike
    PixelCNN++'s density fallback, ~0.06 nats off there).
    """
    log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
    inv = torch.exp(-log_scale)
    centred = x - mean
    upper = inv * (centred + HALF_BIN)  # b
    lower = inv * (centred - HALF_BIN)  # a
    below = F.logsigmoid(upper)  # log σ(b): x = 0 takes (-inf, b]
    above = F.logsigmoid(-lower)  # log(1 - σ(a)): x = 255 takes [a, inf)
    middle = below + above + log1mexp(lower - upper)
    return torch.where(x < -0.999, below, torch.where(x > 0.999, above, middle))


def _blocks(params: torch.Tensor, count: int, pixels: int) -> tuple[torch.Tensor, ...]:
    """(..., count·P) -> count tensors (..., P)."""
    return params.unflatten(-1, (count, pixels)).unbind(-2)


def logistic_nll(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z), one discretized logistic per pixel: params (..., 2P), x (..., P) -> (...)."""
    mean, log_scale = _blocks(params, 2, x.shape[-1])
    return -logistic_log_mass(to_symmetric(x), mean, log_scale).sum(-1)


def logistic_mean(params: torch.Tensor) -> torch.Tensor:
    mean, _ = _blocks(params, 2, params.shape[-1] // 2)
    return ((mean + 1) / 2).clamp(0, 1)


def mixture_nll(params: torch.Tensor, x: torch.Tensor, mixtures: int) -> torch.Tensor:
    """-log p(x|z), a mixture of `mixtures` discretized logistics per pixel (PixelCNN++ without
    the channel coupling): params (..., 3MP) as logits, means, log-scales, each M blocks of P."""
    pixels = x.shape[-1]
    parts = params.unflatten(-1, (3, mixtures, pixels))  # (..., 3, M, P)
    logits, mean, log_scale = parts.unbind(-3)
    log_mass = logistic_log_mass(to_symmetric(x).unsqueeze(-2), mean, log_scale)  # (..., M, P)
    log_p = torch.logsumexp(log_mass + F.log_softmax(logits, dim=-2), dim=-2)
    return -log_p.sum(-1)


def mixture_mean(params: torch.Tensor, mixtures: int) -> torch.Tensor:
    parts = params.unflatten(-1, (3, mixtures, params.shape[-1] // (3 * mixtures)))
    logits, mean, _ = parts.unbind(-3)
    return ((F.softmax(logits, dim=-2) * mean).sum(-2).add(1).div(2)).clamp(0, 1)


def gaussian_nll(params: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) bound for 8-bit data dequantised to y = (k + u)/256: the Gaussian density of y
    plus log 256 per dimension, which makes it an upper bound on -log P(k) (Theis et al. 2016;
    Glow). Log-variances are floored at -14 (σ ≥ e^-7, the logistic's floor)."""
    mean, logvar = _blocks(params, 2, y.shape[-1])
    logvar = logvar.clamp(min=2 * LOG_SCALE_MIN)
    log_density = -0.5 * (math.log(2 * math.pi) + logvar + (y - mean).pow(2) * torch.exp(-logvar))
    return (LOG_256 - log_density).sum(-1)


def gaussian_mean(params: torch.Tensor) -> torch.Tensor:
    mean, _ = _blocks(params, 2, params.shape[-1] // 2)
    return mean.clamp(0, 1)


def categorical_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) of a sentence: Σ_t -log Cat(x_t | logits_t) over its words and `</s>`, padding
    (id 0) left out: (..., T, V), (..., T) -> (...) (Bowman et al. 2016)."""
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), x.reshape(-1), ignore_index=PAD, reduction="none"
    )
    return flat.view(x.shape).sum(-1)


def categorical_mode(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token at each position: (..., T, V) -> (..., T)."""
    return logits.argmax(-1)


def predicted_tokens(x: torch.Tensor) -> torch.Tensor:
    """Tokens a sentence's likelihood predicts: its words and `</s>` (`<s>` is given): (..., T) ->
    (...). Perplexity is exp(Σ NLL / Σ predicted tokens)."""
    return (x != PAD).sum(-1)


@dataclass(frozen=True)
class Likelihood:
    """A decoder likelihood: parameters per pixel, -log p(x|z) and the mean image."""

    name: str
    outputs: int  # decoder outputs per pixel (Q)
    nll: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (..., Q·P), (..., P) -> (...)
    mean: Callable[[torch.Tensor], torch.Tensor]  # (..., Q·P) -> (..., P) in [0, 1]
    eight_bit: bool  # models 8-bit pixels: needs 8-bit data; its NLL is reported in bits/dim


def likelihood(name: str, mixtures: int = 5) -> Likelihood:
    """The likelihood `model.likelihood` names."""
    if name == "bernoulli":
        return Likelihood(name, 1, bernoulli_nll, bernoulli_mean, False)
    if name == "logistic":
        return Likelihood(name, 2, logistic_nll, logistic_mean, True)
    if name == "logistic_mixture":
        return Likelihood(
            name,
            3 * mixtures,
            lambda p, x: mixture_nll(p, x, mixtures),
            lambda p: mixture_mean(p, mixtures),
            True,
        )
    if name == "gaussian":
        return Likelihood(name, 2, gaussian_nll, gaussian_mean, True)
    if name == "categorical":  # outputs: one logit per vocabulary entry and token
        return Likelihood(name, 0, categorical_nll, categorical_mode, False)
    raise ValueError(f"unknown likelihood {name!r}")


def bits_per_dim(nll_nats: torch.Tensor, dims: int) -> torch.Tensor:
    """NLL in nats per example -> bits per dimension: NLL / (C·H·W · ln 2)."""
    return nll_nats / (dims * LN2)
