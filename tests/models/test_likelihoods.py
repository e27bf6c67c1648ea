"""Decoder likelihoods for 8-bit images: normalised over the 256 values, finite gradients at the
edge bins, and equal to a direct float64 transcription of the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from freebits_cli.models.likelihoods import (
    LOG_256,
    bits_per_dim,
    gaussian_nll,
    likelihood,
    logistic_log_mass,
    logistic_nll,
    mixture_nll,
    to_symmetric,
)

VALUES = torch.arange(256, dtype=torch.float64) / 255  # every 8-bit value, stored as k/255
# (mean, log-scale) pairs from sharp to flat, centred, at the edges and far outside [-1, 1].
CASES = [(0.0, -7.0), (0.3, -4.0), (-0.99, -2.0), (1.0, -5.0), (-1.5, 0.0), (2.0, 1.0), (0.1, 3.0)]


def reference_log_mass(k: torch.Tensor, mean: float, log_scale: float) -> torch.Tensor:
    """PixelCNN++'s definition, directly in float64: CDF differences over [x ± 1/255], the edge
    bins taking the tails (Salimans et al. 2017)."""
    x = k.double() * 2 / 255 - 1
    s = math.exp(max(log_scale, -7.0))
    cdf = lambda t: torch.sigmoid((t - mean) / s)  # noqa: E731
    upper = torch.where(k == 255, torch.ones_like(x), cdf(x + 1 / 255))
    lower = torch.where(k == 0, torch.zeros_like(x), cdf(x - 1 / 255))
    return torch.log(upper - lower)


@pytest.mark.parametrize(("mean", "log_scale"), CASES)
def test_logistic_sums_to_one_and_matches_float64_reference(mean: float, log_scale: float) -> None:
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = to_symmetric(VALUES.to(dtype))
        m, s = torch.full_like(x, mean), torch.full_like(x, log_scale)
        log_p = logistic_log_mass(x, m, s)
        assert torch.exp(log_p.double()).sum().item() == pytest.approx(1.0, abs=tol)
    ref = reference_log_mass(torch.arange(256), mean, log_scale)
    ok = ref > -18  # where float64 CDF differences are themselves accurate (to ~1e-8)
    full = lambda v, dtype: torch.full((256,), v, dtype=dtype)  # noqa: E731
    got = logistic_log_mass(
        to_symmetric(VALUES), full(mean, torch.float64), full(log_scale, torch.float64)
    )
    torch.testing.assert_close(got[ok], ref[ok], rtol=0, atol=1e-7)
    got32 = logistic_log_mass(
        to_symmetric(VALUES.float()), full(mean, torch.float32), full(log_scale, torch.float32)
    )
    assert torch.isfinite(got32).all()
    torch.testing.assert_close(got32.double()[ok], ref[ok], rtol=1e-4, atol=1e-4)


def test_far_tail_is_stable_where_the_naive_difference_underflows() -> None:
    # A sharp logistic far from the pixel: σ(b) - σ(a) is 0 in float32; the log-mass is not -inf
    # and equals the float64 value of log σ(b) + log σ(-a) + log(1 - e^(a-b)).
    x, mean, log_scale = torch.tensor([0.5]), torch.tensor([-0.5]), torch.tensor([-6.0])
    got = logistic_log_mass(x, mean, log_scale)
    inv = math.exp(6.0)
    a, b = inv * (1.0 - 1 / 255), inv * (1.0 + 1 / 255)  # standardised bin edges, both > 0
    # log σ(b) + log σ(-a) + log(1 - e^(a-b)), in float64 with exact tail forms.
    expected = (
        -math.log1p(math.exp(-b)) - a - math.log1p(math.exp(-a)) + math.log(-math.expm1(a - b))
    )
    assert torch.isfinite(got).all()
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["logistic", "logistic_mixture", "gaussian"])
def test_gradients_are_finite_at_0_and_255(name: str) -> None:
    lik = likelihood(name, mixtures=3)
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]])  # pixels 0, 255, 0, 255
    if name == "gaussian":
        x = (torch.round(x * 255) + 0.5) / 256
    for scale in (-20.0, -7.0, 0.0, 8.0):  # below the floor, at it, wide, very wide
        for centre in (-3.0, 0.0, 3.0):
            params = torch.full((1, lik.outputs * 4), centre)
            params.view(1, -1, 4)[:, lik.outputs // 2 if name != "logistic_mixture" else 6 :] = (
                scale
            )
            params.requires_grad_(True)
            nll = lik.nll(params, x)
            nll.sum().backward()
            assert torch.isfinite(nll).all() and torch.isfinite(params.grad).all(), (scale, centre)


def test_mixture_is_normalised_and_reduces_to_one_component() -> None:
    k = 3
    torch.manual_seed(0)
    params = torch.randn(1, 3 * k * 256, dtype=torch.float64)  # one mixture per value position
    # All 256 values scored under the same mixture: give every position the same parameters.
    blocks = params.view(3, k, 256)
    blocks[...] = blocks[..., :1]
    nll = mixture_nll(params, VALUES.unsqueeze(0), k)  # sum of -log p over the 256 values
    per_value = torch.stack(
        [
            mixture_nll(
                params.view(3, k, 256)[..., :1].reshape(1, -1), VALUES[i : i + 1].unsqueeze(0), k
            )
            for i in range(256)
        ]
    )
    assert torch.exp(-per_value).sum().item() == pytest.approx(1.0, abs=1e-10)
    assert nll.item() == pytest.approx(per_value.sum().item())
    # A mixture whose weights all sit on component 0 is that component's logistic.
    one = blocks.clone()
    one[0, 0], one[0, 1:] = 50.0, -50.0
    mixed = mixture_nll(one.reshape(1, -1), VALUES.unsqueeze(0), k)
    single = logistic_nll(torch.cat([one[1, 0], one[2, 0]]).unsqueeze(0), VALUES.unsqueeze(0))
    assert mixed.item() == pytest.approx(single.item(), rel=1e-12)


def test_gaussian_with_offset_bounds_the_discrete_likelihood() -> None:
    """E_u[-log N((k+u)/256)] + log 256 ≥ -log P(k), P(k) the Gaussian mass of the bin of k."""
    mean, logvar = 0.4, math.log(0.05**2)
    u = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000  # quadrature over the bin
    for k in (80, 95, 102, 110, 125):  # within 4.5 σ: the exact bin mass is accurate
        y = (k + u) / 256
        params = torch.tensor([[mean, logvar]], dtype=torch.float64).expand(len(u), 2)
        bound = gaussian_nll(params, y.unsqueeze(-1)).mean().item()
        sd = math.exp(logvar / 2)
        cdf = [0.5 * (1 + math.erf((t / 256 - mean) / (sd * math.sqrt(2)))) for t in (k, k + 1)]
        exact = -math.log(cdf[1] - cdf[0])
        assert bound >= exact - 1e-9
        direct = 0.5 * (math.log(2 * math.pi) + logvar) + ((y - mean) ** 2).mean().item() / (
            2 * sd**2
        )
        assert bound == pytest.approx(direct + LOG_256, rel=1e-12)


def test_bits_per_dim_and_mean_images() -> None:
    assert bits_per_dim(torch.tensor(3072 * math.log(2) * 3.0), 3072).item() == pytest.approx(3.0)
    # The mean image of a logistic with mean 0 on [-1, 1] is mid-grey; outputs stay in [0, 1].
    lik = likelihood("logistic")
    params = torch.tensor([[0.0, 5.0, -3.0, -1.0, -1.0, -1.0]])
    assert lik.mean(params).tolist() == [[0.5, 1.0, 0.0]]
    assert lik.outputs == 2 and likelihood("logistic_mixture", 4).outputs == 12
