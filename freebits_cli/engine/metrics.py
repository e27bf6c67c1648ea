"""Held-out measurements of a pack: ELBO, KL per dimension, active units, IWAE NLL, mutual information.

All values are in nats per example (text: per sentence). Every function takes the whole pack and returns one value per
member (leading K axis): on a GPU computed for the pack at once, on a CPU member by member (see
`models.packing`). Randomness comes from per-member generators, so a member's numbers do not depend
on its pack.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

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
    for chunk in x.split(_eval_chunk(model)):
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
    variance = torch.cat(means, dim=1).double().var(dim=1, correction=1)
    return -(recon + kl), recon, kl, kl_per_dim, variance


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


def _eval_chunk(model: Any) -> int:
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


@torch.no_grad()
def mutual_information(
    model: PackedVAE,
    x: torch.Tensor,
    generators: Sequence[torch.Generator],
    budget: int = MEMBER_BUDGET,
) -> torch.Tensor:
    """I(x;z) under q(x, z) = p_data(x) q(z|x), estimated as in He et al. 2019: (K,).

    I = E_x E_q(z|x)[log q(z|x)] − E_q(z)[log q(z)], with the aggregate posterior q(z) the mixture
    of q(z|x_n) over all N evaluation examples, so the estimate is capped by log N; near zero it can
    come out slightly negative (Monte Carlo noise). How log q(z_i) is summed: `_log_aggregate`.
    """
    (mi,) = _by_member(model, x, generators, lambda m, g: (_mutual_information(m, x, g, budget),))
    return mi


LOG_2PI = math.log(2 * math.pi)


def _mutual_information(
    model: Any, x: torch.Tensor, generators: Sequence[torch.Generator], budget: int
) -> torch.Tensor:
    members, latent = model.members, model.latent_dim
    mus, logvars = [], []
    for part in x.split(EVAL_CHUNK):
        mu, logvar = model.encode(part.expand(members, *part.shape))
        mus.append(mu)
        logvars.append(logvar)
    mu, logvar = torch.cat(mus, 1), torch.cat(logvars, 1)  # (K, N, D)
    # E_q(z|x)[log q(z|x)] is the negative entropy of a diagonal Gaussian, in closed form.
    neg_entropy = (-0.5 * latent * LOG_2PI - 0.5 * (1 + logvar).sum(-1)).double()
    z = (mu + draw_noise(mu.shape[1:], generators, x.device) * (0.5 * logvar).exp()).double()
    mu, logvar = mu.double(), logvar.double()
    log_qz = torch.stack([_log_aggregate(z[k], mu[k], logvar[k], budget) for k in range(members)])
    return neg_entropy.mean(-1) - log_qz.mean(-1)


def _log_aggregate(
    z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, budget: int
) -> torch.Tensor:
    """log q(z_i) = log (1/N) Σ_n N(z_i; μ_n, σ_n²) for every sample i of one member: (N,).

    Every pair's log density is a quadratic form in z_i: with w = 1/σ²,
    −½ Σ_d w_nd (z_id − μ_nd)² = Σ_d −½ w_nd z_id² + w_nd μ_nd z_id − ½ w_nd μ_nd², so a block of
    rows is one matrix product [z², z]·[−½ w, w μ]ᵀ. It runs in float32 (half the time of float64,
    and the exponentials too) on quantities centred on the mean posterior mean, which keeps the
    expanded terms, and so their rounding, small: a term is ~ w·spread², not w·(offset + spread)².
    Each sample's own component, the one that dominates where posteriors are sharp and the
    expansion cancels most, is computed exactly in float64 from (z − μ)². The log-sum-exp is
    float32 and each row's result float64. Against every pair in float64 a sample's log q(z_i)
    moves by < 1e-3 nats and the mean over the N samples, the estimate, by < 1e-5
    (tests/test_metrics.py; benchmarks/mi_cost.py on the speed benchmark's pack).
    """
    n, latent = mu.shape
    w = (-logvar).exp()  # (N, D) precisions 1/σ²
    const = -0.5 * (latent * LOG_2PI + logvar.sum(-1))  # (N,) log-normaliser of each component
    own = const - 0.5 * (w * (z - mu).pow(2)).sum(-1)  # (N,) log N(z_i; μ_i, σ_i²), exactly
    centre = mu.mean(0)
    zc, mc = z - centre, mu - centre
    left = torch.cat([zc.pow(2), zc], -1).float()  # (N, 2D)
    right = torch.cat([-0.5 * w, w * mc], -1).T.float().contiguous()  # (2D, N)
    base = (const - 0.5 * (w * mc.pow(2)).sum(-1)).float()  # (N,)
    rows = max(1, budget // (3 * 4 * n))  # three float32 (rows, N) blocks at once
    out = []
    with _full_float32():
        for start in range(0, n, rows):
            block = torch.addmm(base, left[start : start + rows], right)  # (R, N)
            block[:, start : start + rows].diagonal().copy_(own[start : start + rows])
            out.append(_logsumexp(block).double())
    return torch.cat(out) - math.log(n)


#: Exponents are floored here before exp: e^−80 (1.8e-35) is nothing next to the largest term,
#: e^0 = 1, while exponents far below float32's range (−87) send exp to a slow path ten times over.
EXP_FLOOR = -80.0


def _logsumexp(block: torch.Tensor) -> torch.Tensor:
    """log Σ_n exp(block[:, n]) of a float32 block, in place (the block is spent)."""
    top = block.amax(-1, keepdim=True)
    return block.sub_(top).clamp_(min=EXP_FLOOR).exp_().sum(-1).log_() + top.squeeze(-1)


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """float32 products with a float32 mantissa: a `tf32` pack's setting must not reach them."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
