"""The objective's maths against direct transcriptions of the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from freebits_cli.engine.objective import beta_at, binding_share, free_bits_kl, gaussian_kl_per_dim
from freebits_cli.spec import AnnealSpec


def _stats(batch: int = 32, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    logvar = torch.randn(batch, dim, generator=gen, dtype=torch.float64) - 1.0
    return mu, logvar


def seed_kl_loss(mu: torch.Tensor, logvar: torch.Tensor, lam: float) -> torch.Tensor:
    """The seed text's loop: clamp the batch-mean KL of each dimension, sum, times batch size."""
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    kl_per_dim = kl.mean(dim=0)
    return torch.clamp(kl_per_dim, min=lam).sum() * mu.size(0)


def test_gaussian_kl_matches_closed_form_and_torch_distributions() -> None:
    mu, logvar = _stats()
    kl = gaussian_kl_per_dim(mu, logvar)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p))
    assert (kl >= 0).all()


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.3, 1.0, 5.0])
def test_batch_mode_times_batch_size_equals_seed_kl_loss(lam: float) -> None:
    for seed in range(5):
        mu, logvar = _stats(seed=seed)
        kl = gaussian_kl_per_dim(mu, logvar)
        assert free_bits_kl(kl, lam, "batch") * mu.shape[0] == seed_kl_loss(mu, logvar, lam)


def test_dimensions_below_lambda_get_exactly_zero_gradient() -> None:
    mu, logvar = _stats(batch=64, dim=10, seed=3)
    mu = (mu * torch.linspace(0.01, 2.0, 10, dtype=torch.float64)).requires_grad_()
    logvar = (logvar * 0.1).requires_grad_()
    kl = gaussian_kl_per_dim(mu, logvar)
    lam = 0.5
    free_bits_kl(kl, lam, "batch").backward()
    below = kl.detach().mean(0) < lam
    assert below.any() and (~below).any()
    assert (mu.grad[:, below] == 0).all() and (logvar.grad[:, below] == 0).all()
    assert (mu.grad[:, ~below] != 0).any()


def test_lambda_zero_is_the_plain_vae_in_every_mode() -> None:
    mu, logvar = _stats()
    kl = gaussian_kl_per_dim(mu, logvar)
    plain = kl.sum(-1).mean()
    for mode in ("batch", "example", "total", "group", "example_total"):
        torch.testing.assert_close(free_bits_kl(kl, 0.0, mode, groups=4), plain)


def test_other_modes_match_their_formulas() -> None:
    mu, logvar = _stats(batch=16, dim=12, seed=7)
    kl = gaussian_kl_per_dim(mu, logvar)
    lam = 0.4
    batch, dim = kl.shape
    example = sum(sum(max(lam, kl[b, j].item()) for j in range(dim)) for b in range(batch)) / batch
    assert free_bits_kl(kl, lam, "example").item() == pytest.approx(example, rel=1e-12)
    total = max(lam * dim, sum(kl[b].sum().item() for b in range(batch)) / batch)
    assert free_bits_kl(kl, 3.0, "total").item() == pytest.approx(max(3.0 * dim, total), rel=1e-12)
    assert free_bits_kl(kl, lam, "total").item() == pytest.approx(total, rel=1e-12)
    groups, size = 3, dim // 3
    group = sum(
        max(lam, sum(kl[b, g * size : (g + 1) * size].sum().item() for b in range(batch)) / batch)
        for g in range(groups)
    )
    assert free_bits_kl(kl, lam, "group", groups).item() == pytest.approx(group, rel=1e-12)
    # One group per dimension is the batch mode.
    torch.testing.assert_close(free_bits_kl(kl, lam, "group", dim), free_bits_kl(kl, lam, "batch"))


def test_per_member_lambdas_match_separate_calls() -> None:
    kls = torch.stack([gaussian_kl_per_dim(*_stats(seed=s)) for s in range(3)])  # (K, B, D)
    lams = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    for mode in ("batch", "example", "total", "group", "example_total"):
        packed = free_bits_kl(kls, lams, mode, groups=2)
        single = torch.stack([free_bits_kl(kls[k], lams[k].item(), mode, 2) for k in range(3)])
        torch.testing.assert_close(packed, single)
        shares = binding_share(kls, lams, mode, 2)
        assert shares.shape == (3,) and shares[0] == 0  # λ = 0 never binds


def test_binding_share_counts_dimensions_below_lambda() -> None:
    kl = torch.tensor([[0.1, 0.2, 1.0, 3.0]]).repeat(5, 1)
    assert binding_share(kl, 0.5, "batch").item() == pytest.approx(0.5)
    assert binding_share(kl, 0.15, "example").item() == pytest.approx(0.25)
    assert binding_share(kl, 2.0, "total").item() == 1.0  # 4.3 < 2·4
    assert binding_share(kl, 0.5, "group", 2).item() == pytest.approx(0.5)  # groups 0.3 and 4.0


def test_example_total_is_li_et_al_fb1_per_sentence_threshold() -> None:
    """Li et al. 2019's `--fb 1` (bohanli/vae-pretraining-encoder): each example's KL summed over
    dimensions is kept only where it exceeds the target (a mask), here max(λ·D, Σ_j KL_bj) per
    example: the same gradient, a value that never drops below the target."""
    mu, logvar = _stats(batch=16, dim=6, seed=11)
    mu = (mu * torch.linspace(0.0, 1.5, 16, dtype=torch.float64)[:, None]).requires_grad_()
    logvar = (logvar * 0.2).requires_grad_()
    kl = gaussian_kl_per_dim(mu, logvar)
    lam, batch, dim = 0.3, 16, 6
    totals = [sum(kl[b, j].item() for j in range(dim)) for b in range(batch)]
    hand = sum(max(lam * dim, t) for t in totals) / batch
    value = free_bits_kl(kl, lam, "example_total")
    assert value.item() == pytest.approx(hand, rel=1e-12)
    below = torch.tensor([t < lam * dim for t in totals])
    assert below.any() and (~below).any()
    assert binding_share(kl, lam, "example_total").item() == pytest.approx(below.double().mean())
    value.backward()
    # Li et al.'s mask: the examples under the target get no KL gradient at all ...
    assert (mu.grad[below] == 0).all() and (logvar.grad[below] == 0).all()
    # ... the others exactly the plain KL's, divided by the batch (a mean over examples).
    mu2, logvar2 = mu.detach().clone().requires_grad_(), logvar.detach().clone().requires_grad_()
    masked = (gaussian_kl_per_dim(mu2, logvar2).sum(-1) * (~below).double()).sum() / batch
    masked.backward()
    torch.testing.assert_close(mu.grad, mu2.grad, rtol=0, atol=0)
    torch.testing.assert_close(logvar.grad, logvar2.grad, rtol=0, atol=0)
    # It differs from the per-dimension `example` mode and from the batch-mean `total` mode.
    assert value.item() != pytest.approx(free_bits_kl(kl, lam, "example").item())
    assert value.item() != pytest.approx(free_bits_kl(kl, lam, "total").item())


STEPS_PER_EPOCH, TOTAL = 10, 400


def _beta(step: int, **kwargs: object) -> float:
    return beta_at(step, AnnealSpec(**kwargs), STEPS_PER_EPOCH, TOTAL)  # type: ignore[arg-type]


def test_none_schedule_is_one() -> None:
    assert [_beta(s, schedule="none", beta_max=0.3) for s in (0, 50, 400)] == [1.0, 1.0, 1.0]


def test_constant_schedule_is_beta_max_and_none_ignores_it() -> None:
    """A β-VAE (He et al. 2019's β = 0.4 baseline): β ≡ β_max at every step; `none` stays β ≡ 1
    whatever β_max says, as before `constant` existed (so old runs keep their numbers)."""
    for step in (0, 1, 57, TOTAL - 1):
        assert _beta(step, schedule="constant", beta_max=0.4) == 0.4
        assert _beta(step, schedule="constant") == 1.0
        assert _beta(step, schedule="none", beta_max=0.4) == 1.0


def test_linear_warmup() -> None:
    kw = {"schedule": "linear", "warmup_epochs": 10}  # 100 steps
    assert _beta(0, **kw) == 0.0
    assert _beta(50, **kw) == pytest.approx(0.5)
    assert _beta(100, **kw) == 1.0
    assert _beta(399, **kw) == 1.0
    # He et al. 2019 start at 0.1; warmup_steps overrides epochs; β_max caps.
    assert _beta(0, **kw, beta_start=0.1) == pytest.approx(0.1)
    assert _beta(50, **kw, beta_start=0.1) == pytest.approx(0.55)
    assert _beta(10, schedule="linear", warmup_steps=20) == pytest.approx(0.5)
    assert _beta(1000, schedule="linear", beta_max=0.5) == 0.5


def test_sigmoid_warmup_hits_its_end_points() -> None:
    kw = {"schedule": "sigmoid", "warmup_epochs": 10}
    assert _beta(0, **kw) == pytest.approx(0.0, abs=1e-12)
    assert _beta(50, **kw) == pytest.approx(0.5)
    assert _beta(25, **kw) < 0.25 < 0.75 < _beta(75, **kw)
    assert _beta(100, **kw) == pytest.approx(1.0)
    assert _beta(300, **kw) == pytest.approx(1.0)
    values = [_beta(s, **kw) for s in range(0, 101)]
    assert values == sorted(values)


def test_cyclical_schedule_fu_et_al() -> None:
    kw = {"schedule": "cyclical", "cycles": 4, "ratio": 0.5}  # period 100 steps, ramp 50
    assert _beta(0, **kw) == 0.0
    assert _beta(25, **kw) == pytest.approx(0.5)
    assert _beta(50, **kw) == 1.0
    assert _beta(99, **kw) == 1.0
    assert _beta(100, **kw) == 0.0  # the next cycle starts again from 0
    assert _beta(125, **kw) == pytest.approx(0.5)
    assert _beta(399, **kw) == 1.0
    assert _beta(10, schedule="cyclical", cycles=1, ratio=1.0) == pytest.approx(10 / 400)


def test_schedules_depend_on_steps_not_data_size() -> None:
    spec = AnnealSpec(schedule="linear", warmup_steps=100)
    small = [beta_at(s, spec, 5, 500) for s in range(150)]
    large = [beta_at(s, spec, 50, 5000) for s in range(150)]
    assert small == large
    assert math.isclose(beta_at(30, AnnealSpec(schedule="linear", warmup_epochs=2), 30, 300), 0.5)


@pytest.mark.parametrize("mode", ["batch", "example", "total", "group"])
def test_lambda_zero_gradient_is_exactly_the_plain_vae_for_collapsed_units(mode: str) -> None:
    # Near-collapsed units: float32 rounding makes some KL values 0 or slightly negative, where a
    # clamp at 0 would silently zero or halve the gradient.
    gen = torch.Generator().manual_seed(0)
    mu0, logvar0 = (
        torch.randn(64, 8, generator=gen) * 1e-5,
        torch.randn(64, 8, generator=gen) * 1e-5,
    )
    grads = []
    for kind in ("free_bits", "plain"):
        mu, logvar = mu0.clone().requires_grad_(), logvar0.clone().requires_grad_()
        kl = gaussian_kl_per_dim(mu, logvar)
        loss = free_bits_kl(kl, 0.0, mode, 2) if kind == "free_bits" else kl.sum(-1).mean()
        loss.backward()
        grads.append((mu.grad, logvar.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
