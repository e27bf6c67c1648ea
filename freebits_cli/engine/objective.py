"""The maths of the training objective: Gaussian KL, the free-bits variants, and β(t) schedules."""

from __future__ import annotations

import math

import torch

from freebits_cli.spec import AnnealSpec

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) per example and dimension, shape of `mu` (e.g. (B, D) or (K, B, D)).

    KL_bj = -½ (1 + log σ² − μ² − σ²)   (Kingma & Welling 2014, Appendix B).
    """
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag σ²) summed over the last axis."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def _rates(
    kl_per_dim: torch.Tensor, lam: float | torch.Tensor, mode: str, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """What each mode clamps, and its threshold, shaped to broadcast together.

    batch: (..., D) batch-mean KL per dimension; example: (..., B, D) KL per example and dimension;
    total: (...) batch-mean KL of the whole vector against λ·D; example_total: (..., B) each
    example's KL of the whole vector against λ·D; group: (..., G) per group.
    """
    lam_t = torch.as_tensor(lam, dtype=kl_per_dim.dtype, device=kl_per_dim.device)
    lam_t = lam_t.reshape(lam_t.shape + (1,) * (kl_per_dim.dim() - 1 - lam_t.dim()))  # (..., 1)
    if mode == "batch":
        return kl_per_dim.mean(-2), lam_t
    if mode == "example":
        return kl_per_dim, lam_t.unsqueeze(-1)
    if mode == "total":
        return kl_per_dim.sum(-1).mean(-1), lam_t.squeeze(-1) * kl_per_dim.shape[-1]
    if mode == "example_total":
        return kl_per_dim.sum(-1), lam_t * kl_per_dim.shape[-1]
    if mode == "group":
        *lead, batch, dim = kl_per_dim.shape
        grouped = kl_per_dim.reshape(*lead, batch, groups, dim // groups).sum(-1)
        return grouped.mean(-2), lam_t
    raise ValueError(f"unknown free-bits mode {mode!r}")


def free_bits_kl(
    kl_per_dim: torch.Tensor, lam: float | torch.Tensor, mode: str = "batch", groups: int = 1
) -> torch.Tensor:
    """The free-bits KL term per example, from KL of shape (..., B, D); returns shape (...).

    `lam` is λ in nats: a float, or a tensor broadcastable to the leading dims (one λ per member).
    - batch:   Σ_j max(λ, mean_b KL_bj)            (Kingma et al. 2016, free bits per dimension)
    - example: mean_b Σ_j max(λ, KL_bj)            (Li et al. 2019, their "fb 2")
    - total:   max(λ·D, mean_b Σ_j KL_bj)          (a target rate for the whole latent vector)
    - example_total: mean_b max(λ·D, Σ_j KL_bj)    (Li et al. 2019's "fb 1": each sentence's
                                                    total KL against the threshold)
    - group:   Σ_g max(λ, mean_b Σ_{j∈g} KL_bj)    (Kingma et al. 2016, λ per group of latents)
    The clamp makes the KL gradient exactly zero wherever the threshold binds. Where λ = 0 the KL
    passes unclamped, so its gradient is the plain VAE's even where float rounding makes KL ≤ 0.
    """
    rate, threshold = _rates(kl_per_dim, lam, mode, groups)
    clamped = torch.where(threshold > 0, torch.maximum(rate, threshold), rate)
    if mode == "total":
        return clamped
    if mode == "example":
        return clamped.sum(-1).mean(-1)
    if mode == "example_total":
        return clamped.mean(-1)
    return clamped.sum(-1)


def binding_share(
    kl_per_dim: torch.Tensor, lam: float | torch.Tensor, mode: str = "batch", groups: int = 1
) -> torch.Tensor:
    """Share of dimensions whose KL gradient is zeroed by the threshold, shape (...).

    For `batch`, dimension j binds when mean_b KL_bj < λ; `group` counts a group's dimensions when
    the group binds; `example` averages the indicator over examples and dimensions,
    `example_total` over examples (an example binds all its dimensions); `total` binds all or none.
    """
    rate, threshold = _rates(kl_per_dim, lam, mode, groups)
    binds = (rate < threshold).float()
    if mode == "total":
        return binds
    if mode == "example":
        return binds.mean((-2, -1))
    return binds.mean(-1)  # batch, group: over dimensions; example_total: over examples


def beta_at(step: int, anneal: AnnealSpec, steps_per_epoch: int, total_steps: int) -> float:
    """β(t) ∈ [0, β_max] multiplying the KL term at optimisation step t (0-based).

    Functions of the step, so they behave the same for any data set size.
    - none:     β ≡ 1 (the plain ELBO; β_max does not apply, so older runs keep their numbers).
    - constant: β ≡ β_max (a β-VAE; He et al. 2019's β = 0.4 baseline).
    - linear:   β_start → β_max linearly over the warm-up (Bowman et al. 2016; He et al. 2019
                start at 0.1), then β_max.
    - sigmoid:  a logistic ramp rescaled to start at β_start and end at β_max exactly.
    - cyclical: M cycles over training; within each, 0 → β_max over the first R of the cycle,
                then β_max (Fu et al. 2019).
    """
    if anneal.schedule == "none":
        return 1.0
    if anneal.schedule == "constant":
        return anneal.beta_max
    if anneal.schedule == "cyclical":
        period = total_steps / anneal.cycles
        position = (step % period) / period
        return anneal.beta_max * min(1.0, position / anneal.ratio)
    warmup = anneal.warmup_steps or max(1, round(anneal.warmup_epochs * steps_per_epoch))
    progress = min(1.0, step / warmup)
    if anneal.schedule == "linear":
        ramp = progress
    elif anneal.schedule == "sigmoid":
        sharpness = 10.0
        low, high = _logistic(-sharpness / 2), _logistic(sharpness / 2)
        ramp = (_logistic(sharpness * (progress - 0.5)) - low) / (high - low)
    else:
        raise ValueError(f"unknown schedule {anneal.schedule!r}")
    return anneal.beta_start + (anneal.beta_max - anneal.beta_start) * ramp


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
