"""Held-out measurements of a pack: ELBO, KL per dimension (and its informative part), active
units, IWAE NLL, mutual information and the marginal KL.

All values are in nats per example (text: per sentence). Every function takes the whole pack and returns one value per
member (leading K axis): on a GPU computed for the pack at once, on a CPU member by member (see
`models.packing`). Randomness comes from per-member generators, so a member's numbers do not depend
on its pack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from freebits_cli.engine.aggregate import LOG_2PI, log_aggregate
from freebits_cli.engine.objective import gaussian_kl_per_dim
from freebits_cli.models import PackedVAE, packing

EVAL_CHUNK = 2048


def draw_noise(
    shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device
) -> torch.Tensor:
    """Standard normal noise of shape (K, *shape), slice k drawn from member k's own stream."""
    return torch.stack([torch.randn(*shape, generator=g, device=device) for g in generators])


def _by_member(
    model: Any,
    x: torch.Tensor,
    generators: Sequence[torch.Generator],
    compute: Callable[[Any, Sequence[torch.Generator]], tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, ...]:
    """`compute(model, generators)` for the pack at once (GPU), or per member and concatenated."""
    if packing.batched(x.device):
        return compute(model, generators)
    parts = [
        compute(view, [g]) for view, g in zip(packing.member_views(model), generators, strict=True)
    ]
    return tuple(torch.cat(tensors) for tensors in zip(*parts, strict=True))


@dataclass(frozen=True)
class Evaluation:
    """Per-member test-set measurements after an epoch; tensors have a leading K axis."""

    elbo: torch.Tensor  # (K,) -(recon + KL), true KL, β = 1
    recon: torch.Tensor  # (K,)
    kl: torch.Tensor  # (K,)
    kl_per_dim: torch.Tensor  # (K, D) mean over the test set
    au_variance: torch.Tensor  # (K, D) Cov_x(E_q[z_j|x]), unbiased
    #: (K, D) ½ Var_x μ_j over the test set (population variance): the part of KL_j that varies
    #: with x. KL_j = ½ E_x[μ_j² + σ_j² − 1 − log σ_j²] = ½ Var_x μ_j + ½ (E_x μ_j)²
    #: + ½ E_x[σ_j² − 1 − log σ_j²], the last two the same for every x: a unit whose KL is all
    #: offset and variance terms moved off the prior alike for every x (kl_per_dim.csv).
    kl_spread: torch.Tensor


@torch.no_grad()
def evaluate(
    model: PackedVAE, x: torch.Tensor, generators: Sequence[torch.Generator]
) -> Evaluation:
    """Single-sample ELBO on x (N, P) for every member, plus the statistics behind active units."""
    return Evaluation(*_by_member(model, x, generators, lambda m, g: _evaluate(m, x, g)))


def _evaluate(
    model: Any, x: torch.Tensor, generators: Sequence[torch.Generator]
) -> tuple[torch.Tensor, ...]:
    recon_sum = torch.zeros(model.members, device=x.device, dtype=torch.float64)
    kl_sum = torch.zeros(model.members, model.latent_dim, device=x.device, dtype=torch.float64)
    means = []
    for chunk in x.split(eval_chunk(model)):
        xs = trim(chunk).expand(model.members, -1, -1)  # (K, n, P)
        mu, logvar = model.encode(xs)
        z = mu + draw_noise(mu.shape[1:], generators, x.device) * (0.5 * logvar).exp()
        recon_sum += model.nll(model.decode(z, xs), xs).double().sum(-1)
        kl_sum += gaussian_kl_per_dim(mu, logvar).double().sum(-2)
        means.append(mu)
    n = x.shape[0]
    kl_per_dim = kl_sum / n
    recon = recon_sum / n
    kl = kl_per_dim.sum(-1)
    # Burda et al. 2015: A_u = Cov_x(E_q(z|x)[z_u]); unbiased as in He et al. 2019.
    means64 = torch.cat(means, dim=1).double()
    variance = means64.var(dim=1, correction=1)
    spread = 0.5 * means64.var(dim=1, correction=0)
    return -(recon + kl), recon, kl, kl_per_dim, variance, spread


def active_units(variance: torch.Tensor, threshold: float) -> torch.Tensor:
    """Number of units with Cov_x(E_q[z_j|x]) > δ (Burda et al. 2015): (K, D) -> (K,)."""
    return (variance > threshold).sum(-1)


#: Evaluation memory per member of a pack, in bytes. Chunk shapes are sized from it alone (not from
#: the pack size), so which noise draw lands on which (sample, example) never depends on the pack.
MEMBER_BUDGET = 64 * 2**20


#: Text decodes hold logits over the vocabulary for every token: a larger budget per member keeps
#: their chunks from shrinking to a few sentences.
TEXT_MEMBER_BUDGET = 8 * MEMBER_BUDGET


def _floats_per_sample(model: PackedVAE) -> int:
    """float32 values one decoded (sample, example) pair holds at once, per member: the noise and
    z, the decoder's activations (`hidden_units` where a model states them, `floats_per_example`
    for a text model), its output and the element-wise log-likelihood."""
    decoded = getattr(model, "floats_per_example", None)
    if decoded:
        return 3 * model.latent_dim + decoded
    hidden = getattr(model, "hidden_units", 2 * model.input_dim)
    return 3 * model.latent_dim + hidden + 3 * model.input_dim


def _budget(model: Any, budget: int) -> int:
    """The IWAE budget of a model: text models get `TEXT_MEMBER_BUDGET / MEMBER_BUDGET` times it."""
    if getattr(model, "floats_per_example", None):
        return budget * (TEXT_MEMBER_BUDGET // MEMBER_BUDGET)
    return budget


def eval_chunk(model: Any) -> int:
    """Examples per evaluation chunk: `EVAL_CHUNK` images; text as many as `TEXT_MEMBER_BUDGET`
    holds."""
    if not getattr(model, "floats_per_example", None):
        return EVAL_CHUNK
    return max(1, min(EVAL_CHUNK, TEXT_MEMBER_BUDGET // (4 * _floats_per_sample(model))))


def trim(x: torch.Tensor) -> torch.Tensor:
    """Token sequences (n, T) cut after the longest one's last real token (no metric reads
    padding); images unchanged."""
    if x.is_floating_point():
        return x
    return x[:, : max(1, int((x != 0).sum(-1).max()))]


@torch.no_grad()
def iwae_nll(
    model: PackedVAE,
    x: torch.Tensor,
    samples: int,
    generators: Sequence[torch.Generator],
    budget: int = MEMBER_BUDGET,
) -> torch.Tensor:
    """-log p(x) estimated with the importance-weighted bound (Burda et al. 2015), mean over x: (K,).

    log p(x) ≥ E[log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x)], z_i ~ q(z|x). Computed over chunks of
    examples and samples so memory stays within `budget` bytes per member for any k, latent size
    and width; log-sum-exp accumulates in float64.
    """
    (nll,) = _by_member(model, x, generators, lambda m, g: (_iwae(m, x, samples, g, budget),))
    return nll


def _iwae(
    model: Any, x: torch.Tensor, samples: int, generators: Sequence[torch.Generator], budget: int
) -> torch.Tensor:
    members = model.members
    per_chunk = max(1, _budget(model, budget) // (4 * _floats_per_sample(model)))  # pairs
    sample_chunk = min(samples, per_chunk)
    example_chunk = max(1, per_chunk // sample_chunk)
    total = torch.zeros(members, dtype=torch.float64, device=x.device)
    for chunk in x.split(example_chunk):
        chunk = trim(chunk)
        n = chunk.shape[0]
        mu, logvar = model.encode(chunk.expand(members, *chunk.shape))  # (K, n, D)
        std = (0.5 * logvar).exp().unsqueeze(1)
        running = torch.full((members, n), -math.inf, dtype=torch.float64, device=x.device)
        for start in range(0, samples, sample_chunk):
            s = min(sample_chunk, samples - start)
            eps = draw_noise((s, n, model.latent_dim), generators, x.device)  # (K, s, n, D)
            z = mu.unsqueeze(1) + eps * std
            if chunk.is_floating_point():
                params = model.decode(z.reshape(members, s * n, -1))
                params = params.reshape(members, s, n, -1)
                log_px_z = -model.nll(params, chunk.expand(members, s, n, -1))  # no copy of x
            else:  # an autoregressive decoder reads the sentence: one copy per sample
                xs = chunk.expand(members, s, n, -1).reshape(members, s * n, -1)
                params = model.decode(z.reshape(members, s * n, -1), xs)
                log_px_z = -model.nll(params, xs).reshape(members, s, n)
            # log p(z) - log q(z|x) with z - μ = σ·ε: the Gaussian terms in closed form.
            log_pz_qz = 0.5 * (eps.pow(2) - z.pow(2) + logvar.unsqueeze(1)).sum(-1)
            log_w = (log_px_z + log_pz_qz).double()  # (K, s, n)
            running = torch.logaddexp(running, torch.logsumexp(log_w, dim=1))
        total += -(running - math.log(samples)).sum(-1)
    return total / x.shape[0]


@dataclass(frozen=True)
class Information:
    """Where the rate goes (Hoffman & Johnson 2016): E_x KL(q(z|x)‖p(z)) = I(x;z) + KL(q(z)‖p(z)),
    per member, each a mean over independent draws of z from the same encodings: (K,)."""

    mi: torch.Tensor  # I(x;z), the mean over draws
    mi_lo: torch.Tensor  # its 95% interval (NaN for one draw; see `information`)
    mi_hi: torch.Tensor
    marginal_kl: torch.Tensor  # KL(q(z)‖p(z)) = E_q(z)[log q(z)] − E_q(z)[log p(z)]
    draws: torch.Tensor  # (K, R) the MI of each draw


#: Two-sided level of the MI's interval.
MI_LEVEL = 0.95
#: Sample-component pairs the MI's draws may cost together: two draws on 10,000 test examples.
#: Each draw is one pass over N × N pairs (N × B per batch), the estimate's whole cost; the noise
#: of one draw falls as 1/√N, so a large test set needs few draws and a small one gets many.
MI_PAIRS = 2 * 10_000**2


def mi_draws(most: int, n: int, batch: int | None = None) -> int:
    """Draws of the MI estimate on n examples: `most` (eval.mi_draws) where they cost at most
    MI_PAIRS pairs, else as many as do, and never fewer than two (an interval needs two)."""
    per_draw = n * min(n, batch or n)
    return most if most < 2 else max(2, min(most, MI_PAIRS // max(1, per_draw)))


@torch.no_grad()
def information(
    model: PackedVAE,
    x: torch.Tensor,
    generators: Sequence[torch.Generator],
    draws: int = 1,
    batch: int | None = None,
    budget: int = MEMBER_BUDGET,
) -> Information:
    """I(x;z) under q(x, z) = p_data(x) q(z|x) and the marginal KL of the aggregate posterior, from
    `draws` independent draws of one z per example, the encodings computed once.

    I = E_x E_q(z|x)[log q(z|x)] − E_q(z)[log q(z)], the first term in closed form (a Gaussian's
    negative entropy), the second over z_i ~ q(z|x_i); KL(q(z)‖p(z)) = E[log q(z_i)] −
    E[log p(z_i)] from the same samples, so the two estimates add up to a Monte Carlo estimate of
    the mean analytic KL. q(z) mixes q(z|x_n) over all N evaluation examples (`batch` None, as
    Li et al. 2019's code: the estimate is capped by log N), or over each consecutive block of
    `batch` examples, the blocks' estimates averaged weighted by their sizes (He et al. 2019's
    code: capped by log B, and lower). How log q(z_i) is summed: `aggregate.log_aggregate`. Draw
    1 is the single draw earlier versions reported.

    The interval: given the encodings, q(z) is fixed, so the terms t_i = E log q(z|x_i) −
    log q(z_i) of one draw are independent across examples i (and across draws). The variance of
    the mean over R draws and N examples is Σ_i Var(t_i) / (R N²), estimated from each example's
    spread over the draws (N(R − 1) degrees of freedom, so two draws already pin it down). It says
    how far the estimate may sit from its expectation on these examples — the Monte Carlo noise
    of z — not which examples the test set holds.
    """
    mi_terms, marginal_terms = _by_member(
        model, x, generators, lambda m, g: _information(m, x, g, draws, batch, budget)
    )  # (K, R, N) each
    per_draw = mi_terms.mean(-1)  # (K, R)
    mean = per_draw.mean(-1)
    if draws < 2:
        nan = torch.full_like(mean, math.nan)
        return Information(mean, nan, nan, marginal_terms.mean((-1, -2)), per_draw)
    from scipy import stats

    n = mi_terms.shape[-1]
    variance = mi_terms.var(1, correction=1).sum(-1) / (draws * n * n)
    half = stats.t.ppf(0.5 + MI_LEVEL / 2, n * (draws - 1)) * variance.sqrt()
    return Information(mean, mean - half, mean + half, marginal_terms.mean((-1, -2)), per_draw)


def mutual_information(
    model: PackedVAE,
    x: torch.Tensor,
    generators: Sequence[torch.Generator],
    budget: int = MEMBER_BUDGET,
) -> torch.Tensor:
    """I(x;z) of one draw (`information` with its defaults): (K,)."""
    return information(model, x, generators, budget=budget).mi


def _information(
    model: Any,
    x: torch.Tensor,
    generators: Sequence[torch.Generator],
    draws: int,
    batch: int | None,
    budget: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per draw and example, the MI's and the marginal KL's terms: two (k, R, N) tensors for the
    k members `model` holds."""
    members, latent = model.members, model.latent_dim
    mus, logvars = [], []
    for part in x.split(EVAL_CHUNK):
        mu, logvar = model.encode(part.expand(members, *part.shape))
        mus.append(mu)
        logvars.append(logvar)
    mu, logvar = torch.cat(mus, 1), torch.cat(logvars, 1)  # (K, N, D)
    n = mu.shape[1]
    # E_q(z|x)[log q(z|x)] is the negative entropy of a diagonal Gaussian, in closed form.
    neg_entropy = (-0.5 * latent * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).double()  # (K, N)
    std, mu64, logvar64 = (0.5 * logvar).exp(), mu.double(), logvar.double()
    blocks = [(s, min(n, s + batch)) for s in range(0, n, batch)] if batch else [(0, n)]
    mi, marginal = [], []
    for _ in range(draws):
        z = (mu + draw_noise(mu.shape[1:], generators, x.device) * std).double()  # (K, N, D)
        log_qz = torch.stack(
            [
                torch.cat(
                    [
                        log_aggregate(z[k, a:b], mu64[k, a:b], logvar64[k, a:b], budget)
                        for a, b in blocks
                    ]
                )
                for k in range(members)
            ]
        )
        log_pz = -0.5 * (latent * LOG_2PI + z.pow(2).sum(-1))  # (K, N) log N(z_i; 0, I)
        mi.append(neg_entropy - log_qz)
        marginal.append(log_qz - log_pz)
    return torch.stack(mi, 1), torch.stack(marginal, 1)
