"""Metrics against their definitions: IWAE bound, mutual information, active units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freebits_cli.data import load_dataset
from freebits_cli.engine import aggregate, metrics
from freebits_cli.engine.metrics import active_units, evaluate, iwae_nll, mutual_information
from freebits_cli.engine.objective import gaussian_kl_per_dim, log_normal
from freebits_cli.models import PackedVAE
from freebits_cli.models.likelihoods import bernoulli_nll as reconstruction_nll
from freebits_cli.spec import DatasetSpec


def gens(seed: int, k: int = 2) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100 + i) for i in range(k)]


@pytest.fixture(scope="module")
def trained() -> tuple[PackedVAE, torch.Tensor]:
    """Two small VAEs trained briefly on digits (a pack of 2), and 200 test images."""
    data = load_dataset(DatasetSpec())
    x = torch.from_numpy(data.x_train)
    torch.manual_seed(0)
    model = PackedVAE(2, 64, [64], 6, "relu")
    model.reset(gens(1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(0, len(x), (2, 64))
        xb = x[idx]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        loss = reconstruction_nll(model.decode(z), xb).mean(-1)
        loss = loss + gaussian_kl_per_dim(mu, logvar).sum(-1).mean(-1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return model.eval(), torch.from_numpy(data.x_test[:200])


def test_iwae_with_one_sample_is_the_elbo_in_expectation(
    trained: tuple[PackedVAE, torch.Tensor],
) -> None:
    model, x = trained
    repeats = [iwae_nll(model, x, 1, gens(s)) for s in range(20)]
    iwae1 = torch.stack(repeats).mean(0)
    elbos = torch.stack([evaluate(model, x, gens(100 + s)).elbo for s in range(20)]).mean(0)
    spread = torch.stack(repeats).std(0) / math.sqrt(20)
    assert torch.all((iwae1 + elbos).abs() < 4 * spread + 0.05), (iwae1, -elbos)


def test_iwae_bound_tightens_with_more_samples(trained: tuple[PackedVAE, torch.Tensor]) -> None:
    model, x = trained
    nll = {k: iwae_nll(model, x, k, gens(k)) for k in (1, 5, 50)}
    assert torch.all(nll[5] <= nll[1] + 0.05) and torch.all(nll[50] <= nll[5] + 0.05)
    assert torch.all(nll[1] - nll[50] > 0.1)  # a trained VAE's ELBO is not tight


def test_iwae_chunking_does_not_change_the_estimate(
    trained: tuple[PackedVAE, torch.Tensor],
) -> None:
    model, x = trained
    whole = iwae_nll(model, x[:20], 30, gens(5))
    # A tiny memory budget forces one example and a few samples per chunk. Chunks draw their
    # noise in another order, so the two estimates agree within Monte Carlo error, not exactly.
    chunked = iwae_nll(model, x[:20], 30, gens(5), budget=10_000)
    assert torch.allclose(whole, chunked, atol=0.5)


def test_a_members_iwae_does_not_depend_on_its_pack(
    trained: tuple[PackedVAE, torch.Tensor],
) -> None:
    model, x = trained
    alone = PackedVAE(1, 64, [64], 6, "relu")
    with torch.no_grad():
        for param, source in zip(alone.parameters(), model.parameters(), strict=True):
            param.copy_(source[:1])
    for budget in (10_000, 2**26):  # chunked, and in one piece
        packed = iwae_nll(model, x[:30], 20, gens(9), budget=budget)
        single = iwae_nll(alone, x[:30], 20, gens(9)[:1], budget=budget)
        # Equal up to float rounding of batched matmuls (a different noise layout gives ~1e-2).
        assert packed[0].item() == pytest.approx(single[0].item(), abs=1e-6)


def test_iwae_equals_direct_transcription(trained: tuple[PackedVAE, torch.Tensor]) -> None:
    model, x = trained
    k = 7
    got = iwae_nll(model, x[:10], k, gens(3))
    g = gens(3)
    with torch.no_grad():
        mu, logvar = model.encode(x[:10].expand(2, 10, 64))
        expected = []
        for m in range(2):
            eps = torch.randn(k, 10, 6, generator=g[m])
            z = mu[m] + eps * (0.5 * logvar[m]).exp()
            logits = model.decode(z.reshape(1, k * 10, 6).expand(2, -1, -1))[m].reshape(k, 10, 64)
            log_w = (
                -reconstruction_nll(logits, x[:10].expand(k, 10, 64))
                + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                - torch.distributions.Normal(mu[m], (0.5 * logvar[m]).exp()).log_prob(z).sum(-1)
            )
            expected.append(-(torch.logsumexp(log_w.double(), 0) - math.log(k)).mean())
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-4)


def test_mutual_information_bounds(trained: tuple[PackedVAE, torch.Tensor]) -> None:
    model, x = trained
    mi = mutual_information(model, x, gens(4))
    kl = evaluate(model, x, gens(4)).kl
    assert torch.all(mi > 0.1)
    assert torch.all(mi <= kl + 0.05)
    assert torch.all(mi <= math.log(len(x)) + 1e-6)


def test_mutual_information_equals_the_pairwise_definition(
    trained: tuple[PackedVAE, torch.Tensor],
) -> None:
    """The matrix-product form against log N(z_i; μ_n, σ_n²) evaluated pair by pair, and chunked
    (a tiny budget) the same as whole."""
    model, x = trained
    got = mutual_information(model, x, gens(8))
    chunked = mutual_information(model, x, gens(8), budget=3 * 4 * len(x) * 7)
    with torch.no_grad():
        mu, logvar = model.encode(x.expand(2, *x.shape))
    z = (
        mu
        + torch.stack([torch.randn(*mu.shape[1:], generator=g) for g in gens(8)])
        * (0.5 * logvar).exp()
    )
    z, mu, logvar = z.double(), mu.double(), logvar.double()
    pairs = log_normal(z.unsqueeze(2), mu.unsqueeze(1), logvar.unsqueeze(1))  # (K, N, N)
    log_qz = torch.logsumexp(pairs, -1) - math.log(len(x))
    log_q_own = -0.5 * (6 * math.log(2 * math.pi) + (1 + logvar).sum(-1))
    expected = (log_q_own - log_qz).mean(-1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # float32 products (see below)
    torch.testing.assert_close(chunked, got, rtol=0, atol=1e-6)


def test_ignored_latent_gives_zero_mi_and_no_active_units(
    trained: tuple[PackedVAE, torch.Tensor],
) -> None:
    model, x = trained
    collapsed = PackedVAE(2, 64, [64], 6, "relu")
    collapsed.load_state_dict(model.state_dict())
    with torch.no_grad():
        collapsed.to_stats.weight.zero_()  # q(z|x) is the same Gaussian for every x
        collapsed.decoder[0].weight.zero_()  # and the decoder ignores z
    mi = mutual_information(collapsed, x, gens(6))
    # The estimator's only error is Monte Carlo noise in E[log q(z)], sd ≈ sqrt(D / 2N).
    assert torch.all(mi.abs() < 3 * math.sqrt(6 / (2 * len(x))))
    ev = evaluate(collapsed, x, gens(6))
    assert active_units(ev.au_variance, 0.01).tolist() == [0, 0]


def test_active_units_match_numpy_covariance_rule(trained: tuple[PackedVAE, torch.Tensor]) -> None:
    model, x = trained
    ev = evaluate(model, x, gens(7))
    with torch.no_grad():
        mu, _ = model.encode(x.expand(2, *x.shape))
    for m in range(2):
        means = mu[m].numpy().astype(np.float64)
        variance = np.cov(means, rowvar=False, ddof=1).diagonal()
        np.testing.assert_allclose(ev.au_variance[m].numpy(), variance, rtol=1e-6)
        for delta in (0.01, 0.1, 1.0):
            assert active_units(ev.au_variance, delta)[m] == int((variance > delta).sum())


def test_log_normal_matches_torch(trained: tuple[PackedVAE, torch.Tensor]) -> None:
    z, mu, logvar = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    expected = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, logvar), expected)


def pairwise_log_aggregate(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/N) Σ_n N(z_i; μ_n, σ_n²) pair by pair from (z − μ)², in float64: the definition."""
    out = []
    for zs in z.double().split(100):
        pairs = log_normal(zs.unsqueeze(1), mu.double().unsqueeze(0), logvar.double().unsqueeze(0))
        out.append(torch.logsumexp(pairs, -1) - math.log(len(mu)))
    return torch.cat(out)


def posteriors(n: int, active: int, latent: int, sigma: float) -> tuple[torch.Tensor, ...]:
    """z, μ, log σ² of n examples: `active` units spread ~1 with posterior sd ≈ sigma, the rest
    collapsed (μ ≈ 0, σ ≈ 1), as a trained encoder gives them."""
    g = torch.Generator().manual_seed(n + active)
    mu = torch.randn(n, latent, generator=g) * 0.01
    logvar = torch.randn(n, latent, generator=g) * 0.01
    mu[:, :active] = torch.randn(n, active, generator=g) + 0.5
    scale = sigma * (0.5 + torch.rand(n, active, generator=g))
    logvar[:, :active] = 2 * scale.log()
    z = mu + torch.randn(n, latent, generator=g) * (0.5 * logvar).exp()
    return z.double(), mu.double(), logvar.double()


@pytest.mark.parametrize(
    ("active", "sigma"),
    [(6, 0.1), (6, 1e-3), (0, 1.0), (16, 0.3)],
    ids=["trained", "very sharp", "collapsed", "all active"],
)
def test_log_aggregate_is_the_float64_sum_over_every_pair(active: int, sigma: float) -> None:
    """float32 products on centred quantities, each sample's own component exact in float64:
    every log q(z_i) within 1e-3 nats of summing every pair in float64, their mean (what the MI
    estimate uses) within 1e-5, sharp posteriors included (σ = 1e-3, where the expanded form
    cancels most); a tiny budget (blocks of 7 samples) changes nothing beyond rounding."""
    z, mu, logvar = posteriors(1500, active, 16, sigma)
    expected = pairwise_log_aggregate(z, mu, logvar)
    for budget in (metrics.MEMBER_BUDGET, 3 * 4 * 1500 * 7):
        got = aggregate.log_aggregate(z, mu, logvar, budget)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
        assert abs(float(got.mean() - expected.mean())) < 1e-5


def test_tf32_setting_does_not_reach_the_mi_products() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        z, mu, logvar = posteriors(300, 4, 8, 0.1)
        aggregate.log_aggregate(z, mu, logvar, metrics.MEMBER_BUDGET)
        assert torch.backends.cuda.matmul.allow_tf32  # restored afterwards
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
