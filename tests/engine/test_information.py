"""Where the rate goes: MI with its interval, the marginal KL, the per-unit split of KL, and the
verdict — against closed forms (a linear-Gaussian encoder on Gaussian data), a quadrature of the
aggregate posterior's entropy, and runs built to reach each verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sweeps
import torch
from torch import nn

from freebits_cli import schema
from freebits_cli.data import load_dataset
from freebits_cli.engine.metrics import active_units, evaluate, information, mutual_information
from freebits_cli.engine.objective import gaussian_kl_per_dim, log_normal
from freebits_cli.models import PackedVAE
from freebits_cli.models.likelihoods import bernoulli_nll
from freebits_cli.results import information as info
from freebits_cli.results.reader import read_kl_history, read_results
from freebits_cli.spec import DatasetSpec
from freebits_cli.spec.files import build_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def gens(seed: int, k: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed * 100 + i) for i in range(k)]


class LinearGaussian(nn.Module):
    """q(z|x) = N(a ⊙ x + b, diag s²) for each member (rows of a, b, log s²: (K, D)); on data
    x ~ N(0, I) every quantity has a closed form (per unit, x_j ~ N(0, 1)):
    E_x KL = ½ (a² + b² + s² − 1 − log s²); q(z) = N(b, a² + s²), so
    I(x;z) = ½ log((a² + s²) / s²) and KL(q(z)‖p(z)) = ½ (a² + s² + b² − 1 − log(a² + s²))."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, logvar: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b, self.lv = nn.Parameter(a), nn.Parameter(b), nn.Parameter(logvar)
        self.members, self.latent_dim = a.shape

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = x * self.a.unsqueeze(1) + self.b.unsqueeze(1)
        return mu, self.lv.unsqueeze(1).expand_as(mu)

    def closed_forms(self) -> dict[str, torch.Tensor]:
        a2, b2, s2 = self.a.detach() ** 2, self.b.detach() ** 2, self.lv.detach().exp()
        return {
            "kl": (0.5 * (a2 + b2 + s2 - 1 - s2.log())).sum(-1),
            "mi": (0.5 * ((a2 + s2) / s2).log()).sum(-1),
            "marginal_kl": (0.5 * (a2 + s2 + b2 - 1 - (a2 + s2).log())).sum(-1),
        }


def linear_gaussian() -> LinearGaussian:
    # Member 0: two informative units; member 1: one unit moved off the prior alike for every x
    # (a = 0: no information, all its KL marginal) beside one weakly informative unit.
    a = torch.tensor([[1.0, 0.5], [0.0, 0.3]])
    b = torch.tensor([[0.3, -0.2], [1.0, 0.0]])
    logvar = torch.tensor([[math.log(0.25), math.log(0.5)], [math.log(0.3), 0.0]])
    return LinearGaussian(a, b, logvar)


def test_mi_and_marginal_kl_match_their_closed_forms() -> None:
    """With 3,000 examples the aggregate posterior of the data set is the Gaussian q(z) to within
    the sampling of x: MI and marginal KL within 0.04 nats of their closed forms, and MI +
    marginal KL within Monte Carlo noise of the mean analytic KL of the very same encodings."""
    model = linear_gaussian()
    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(1))
    got = information(model, x, gens(2, 2), draws=4)
    truth = model.closed_forms()
    torch.testing.assert_close(got.mi.float(), truth["mi"], atol=0.04, rtol=0)
    torch.testing.assert_close(got.marginal_kl.float(), truth["marginal_kl"], atol=0.04, rtol=0)
    with torch.no_grad():
        mu, logvar = model.encode(x.expand(2, -1, -1))
    kl = gaussian_kl_per_dim(mu, logvar).double().sum(-1).mean(-1)  # this sample's analytic KL
    assert torch.all((got.mi + got.marginal_kl - kl).abs() < 0.03), (got.mi + got.marginal_kl, kl)
    # The unit with a = 0 carries no information: member 1's MI is its weak unit's alone.
    assert float(got.mi[1]) == pytest.approx(float(truth["mi"][1]), abs=0.03)
    assert float(truth["mi"][1]) < 0.05 < float(got.marginal_kl[1])


def test_one_draw_is_the_single_draw_estimate_and_draws_share_the_encodings() -> None:
    """Draw 1 of `information` is the earlier single-draw estimate exactly; the mean lies inside
    its interval, the interval shrinks with more draws, and one draw has none."""
    model = linear_gaussian()
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(3))
    one = mutual_information(model, x, gens(4, 2))
    many = information(model, x, gens(4, 2), draws=12)
    torch.testing.assert_close(many.draws[:, 0], one, rtol=0, atol=0)
    assert torch.all((many.mi_lo < many.mi) & (many.mi < many.mi_hi))
    few = information(model, x, gens(4, 2), draws=3)
    assert torch.all(few.mi_hi - few.mi_lo > many.mi_hi - many.mi_lo)
    single = information(model, x, gens(4, 2), draws=1)
    assert torch.isnan(single.mi_lo).all() and torch.isnan(single.mi_hi).all()


def mixture_entropy(mu: np.ndarray, sigma: np.ndarray) -> float:
    """H(q) of the 1-D mixture (1/N) Σ_n N(μ_n, σ_n²) by quadrature on a fine grid."""
    grid = np.linspace(mu.min() - 8 * sigma.max(), mu.max() + 8 * sigma.max(), 40_001)
    dens = np.zeros_like(grid)
    for m, s in zip(mu, sigma, strict=True):
        dens += np.exp(-0.5 * ((grid - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    dens /= len(mu)
    integrand = np.where(dens > 0, -dens * np.log(np.where(dens > 0, dens, 1.0)), 0.0)
    return float(np.trapezoid(integrand, grid))


def test_the_interval_over_draws_covers_the_truth_in_a_simulated_case() -> None:
    """The dataset estimator targets I(x;z) under the empirical distribution of the N examples,
    H(q_N(z)) − E_n H(q(z|x_n)), which quadrature gives exactly in one dimension. Over 20
    independent sets of draws, the 95% interval of 10 draws covers it in at least 16 (19 expected;
    16 or fewer happens with probability < 2%), and it is not so wide as to cover everything."""
    n = 300
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 1, generator=g)
    sigma = 0.2 + 0.6 * torch.rand(n, 1, generator=g)  # per-example posterior widths

    class Heteroscedastic(LinearGaussian):
        def encode(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return 1.2 * xs + self.b.unsqueeze(1), 2 * sigma.log().expand_as(xs)

    model = Heteroscedastic(torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1))
    mu_np, s_np = 1.2 * x[:, 0].double().numpy(), sigma[:, 0].double().numpy()
    truth = mixture_entropy(mu_np, s_np) - float(
        np.mean(0.5 * np.log(2 * math.pi * math.e * s_np**2))
    )
    covered, widths = 0, []
    for seed in range(20):
        got = information(model, x, gens(100 + seed, 1), draws=10)
        covered += float(got.mi_lo[0]) <= truth <= float(got.mi_hi[0])
        widths.append(float(got.mi_hi[0] - got.mi_lo[0]))
    assert covered >= 16, (covered, truth)
    assert max(widths) < 0.2  # an interval that says something


def test_the_batch_estimator_is_he_et_als_per_batch_mixture() -> None:
    """`batch`: each block of B consecutive examples mixes its own q(z), and the blocks' MIs are
    averaged weighted by size (the last block is smaller) — transcribed pair by pair; it is capped
    by log B, so below the dataset estimate where MI is large."""
    model = linear_gaussian()
    x = torch.randn(230, 2, generator=torch.Generator().manual_seed(5))
    got = information(model, x, gens(6, 2), batch=50)
    with torch.no_grad():
        mu, logvar = model.encode(x.expand(2, -1, -1))
    eps = torch.stack([torch.randn(230, 2, generator=g) for g in gens(6, 2)])
    z = (mu + eps * (0.5 * logvar).exp()).double()
    mu, logvar = mu.double(), logvar.double()
    expected = torch.zeros(2, dtype=torch.float64)
    for start in range(0, 230, 50):
        rows = slice(start, min(230, start + 50))
        zb, mb, lb = z[:, rows], mu[:, rows], logvar[:, rows]
        pairs = log_normal(zb.unsqueeze(2), mb.unsqueeze(1), lb.unsqueeze(1))  # (K, B, B)
        log_qz = torch.logsumexp(pairs, -1) - math.log(zb.shape[1])
        neg_entropy = -0.5 * (2 * math.log(2 * math.pi) + (1 + lb).sum(-1))
        expected += (neg_entropy - log_qz).sum(-1)
    torch.testing.assert_close(got.mi, expected / 230, rtol=0, atol=1e-5)
    dataset = information(model, x, gens(6, 2))
    assert float(got.mi[0]) < float(dataset.mi[0]) and float(got.mi[0]) < math.log(50)


@pytest.fixture(scope="module")
def digits() -> tuple[PackedVAE, torch.Tensor]:
    """Two small VAEs trained briefly on digits (a pack of 2), and 300 test images."""
    data = load_dataset(DatasetSpec())
    x = torch.from_numpy(data.x_train)
    torch.manual_seed(0)
    model = PackedVAE(2, 64, [64], 6, "relu")
    model.reset(gens(1, 2))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        xb = x[torch.randint(0, len(x), (2, 64))]
        mu, logvar = model.encode(xb)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        loss = bernoulli_nll(model.decode(z), xb).mean(-1)
        loss = loss + gaussian_kl_per_dim(mu, logvar).sum(-1).mean(-1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return model.eval(), torch.from_numpy(data.x_test[:300])


def test_kl_per_unit_splits_into_spread_and_rest(digits: tuple[PackedVAE, torch.Tensor]) -> None:
    """KL_j = ½ Var_x μ_j + ½ (E_x μ_j)² + ½ E_x[σ_j² − 1 − log σ_j²], each part transcribed from
    the encodings."""
    model, x = digits
    ev = evaluate(model, x, gens(2, 2))
    with torch.no_grad():
        mu, logvar = model.encode(x.expand(2, *x.shape))
    mu, logvar = mu.double(), logvar.double()
    spread = 0.5 * mu.var(1, correction=0)
    rest = 0.5 * mu.mean(1) ** 2 + 0.5 * (logvar.exp() - 1 - logvar).mean(1)
    torch.testing.assert_close(ev.kl_spread, spread, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ev.kl_per_dim - ev.kl_spread, rest, rtol=1e-5, atol=1e-6)


def constant_encoder(model: PackedVAE, mean: float, logvar: float) -> PackedVAE:
    """`model` with q(z|x) = N(mean, e^logvar) for every x: the encoder ignores its input."""
    fixed = PackedVAE(2, 64, [64], 6, "relu")
    fixed.load_state_dict(model.state_dict())
    with torch.no_grad():
        fixed.to_stats.weight.zero_()
        bias = fixed.to_stats.bias  # (K, …, 2D): μ then log σ²
        bias[..., :6], bias[..., 6:] = mean, logvar
    return fixed.eval()


def verdicts(model: PackedVAE, x: torch.Tensor) -> list[str]:
    """Each member's verdict from its measured KL, MI interval and covariance AU."""
    ev, got = evaluate(model, x, gens(3, 2)), information(model, x, gens(4, 2), draws=10)
    au = active_units(ev.au_variance, 0.01)
    return [
        info.verdict(float(ev.kl[k]), float(got.mi_lo[k]), float(got.mi_hi[k]), int(au[k]))
        for k in range(2)
    ]


def test_each_verdict_on_a_model_built_to_reach_it(digits: tuple[PackedVAE, torch.Tensor]) -> None:
    """A trained VAE is informative; an encoder fixed to the prior has collapsed; an encoder fixed
    to one non-prior posterior for every x has KL well above 0 (6 × 1.07 nats), MI ≈ 0 — within
    the estimator's noise, sd √(D/2N) per draw — with an interval reaching below the threshold,
    and no covariance-active unit: KL without information."""
    model, x = digits
    assert verdicts(model, x) == [info.INFORMATIVE] * 2
    assert verdicts(constant_encoder(model, 0.0, 0.0), x) == [info.COLLAPSED] * 2
    shifted = constant_encoder(model, 1.0, -2.0)
    ev, got = evaluate(shifted, x, gens(3, 2)), information(shifted, x, gens(4, 2), draws=10)
    noise = math.sqrt(6 / (2 * len(x))) / math.sqrt(10)  # sd of a mean of 10 draws
    torch.testing.assert_close(ev.kl, torch.full_like(ev.kl, 6 * 0.5 * (math.exp(-2) + 2)))
    assert torch.all(got.mi_lo < info.MI_INFORMATIVE) and torch.all(got.mi.abs() < 3 * noise)
    # All of its rate is marginal KL: the posteriors moved off the prior alike.
    torch.testing.assert_close(got.marginal_kl, ev.kl, atol=0.2, rtol=0)
    assert verdicts(shifted, x) == [info.KL_WITHOUT_INFORMATION] * 2


def test_the_verdict_rule_at_its_thresholds() -> None:
    t = info.MI_INFORMATIVE
    assert info.verdict(info.COLLAPSED_KL / 2, 3.0, 4.0, 5) == info.COLLAPSED  # KL ≈ 0 first
    assert info.verdict(1.0, t + 0.01, 0.3, 0) == info.INFORMATIVE  # MI's interval above t
    assert info.verdict(1.0, -0.1, 0.3, 2) == info.INFORMATIVE  # straddles: covariance AU decide
    assert info.verdict(1.0, -0.1, t, 3) == info.KL_WITHOUT_INFORMATION  # all of it at or below t
    assert info.verdict(1.0, 0.01, 0.04, 32) == info.KL_WITHOUT_INFORMATION  # AU carry < t
    assert info.verdict(9.75, -0.1, 0.05, 0) == info.KL_WITHOUT_INFORMATION  # the run
    assert info.verdict(2.0, t - 0.01, 0.2, 0) == info.KL_WITHOUT_INFORMATION
    assert info.verdict(2.0, math.nan, math.nan, 0) == info.KL_WITHOUT_INFORMATION  # no MI
    assert info.verdict(2.0, math.nan, math.nan, 1) == info.INFORMATIVE
    assert info.verdict(math.nan, 1.0, 2.0, 3) == ""
    row = {"test_kl": "2.0", "test_mi_lo": None, "test_mi_hi": None, "active_units": 3}
    assert info.verdict_of(row) == info.INFORMATIVE
    assert set(info.VERDICTS) == {info.COLLAPSED, info.INFORMATIVE, info.KL_WITHOUT_INFORMATION}


TINY = [
    ("grid.lambda", [0, 2]),
    ("train.epochs", 10),
    ("train.lr", 0.003),
    ("model.hidden", [64]),
    ("model.latent_dim", 4),
    ("eval.iwae_samples", 2),
    ("eval.samples", 2),
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, one_thread_module: None) -> Path:
    out = tmp_path_factory.mktemp("info")
    result = sweeps.run(build_spec(None, TINY), out)
    assert result.exit_code == 0 and result.trained == 2
    return out


def summaries(out: Path) -> list[dict]:
    folders = sorted((out / "default" / schema.RUNS_DIR).iterdir())
    return [json.loads((f / schema.SUMMARY).read_text()) for f in folders]


def test_a_trained_run_decomposes_its_rate_and_states_its_verdict(swept: Path) -> None:
    """On trained runs: MI + marginal KL is test_kl within Monte Carlo noise (10 draws of 359
    examples, 4 units: sd ≈ 0.02), the MI lies in its interval, the verdict is the rule's, and
    the probe of the posterior means beats chance (1/10) clearly."""
    runs = summaries(swept)
    for s in runs:
        assert s["test_mi"] + s["test_marginal_kl"] == pytest.approx(s["test_kl"], abs=0.15)
        assert s["test_mi_lo"] < s["test_mi"] < s["test_mi_hi"]
        assert s["information"] == info.verdict_of(s) and s["information"] in info.VERDICTS
        assert s["test_probe_accuracy"] > 0.5
    assert max(s["test_kl"] for s in runs) > 1  # λ = 2 keeps a rate to split
    assert min(s["test_mi_lo"] for s in runs) > info.MI_INFORMATIVE
    table = read_results(swept).table
    assert set(table["information"]) == {s["information"] for s in runs}


def test_kl_per_dim_csv_holds_the_split(swept: Path) -> None:
    for folder in sorted((swept / "default" / schema.RUNS_DIR).iterdir()):
        hist = read_kl_history(folder, lambda m: None)
        assert hist is not None and list(hist.columns) == list(schema.KL_COLUMNS)
        assert (hist["kl_spread"] >= 0).all() and hist["kl_spread"].notna().all()
        np.testing.assert_allclose(hist["kl_spread"] + hist["kl_rest"], hist["kl"], rtol=1e-12)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eval.mi_estimator", "pairs"),
        ("eval.mi_draws", 0),
        ("eval.mi_batch", 1),
        ("eval.probe_features", "logits"),
        ("eval.temperature", 0),
    ],
)
def test_bad_information_fields_name_themselves(field: str, value: object) -> None:
    from freebits_cli.errors import SpecError

    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        build_spec(None, [(field, value)])


def test_the_new_fields_at_their_defaults_keep_every_run_id() -> None:
    """Added fields left at their defaults are not part of a run's identity (results folders of
    earlier versions are recognised); set otherwise they are."""
    run = build_spec(None, []).expand()[0]
    assert not {"mi_draws", "mi_estimator", "mi_batch", "probe", "temperature"} & set(
        run.identity()["eval"]
    )
    batch = build_spec(None, [("eval.mi_estimator", "batch")]).expand()[0]
    assert batch.identity()["eval"]["mi_estimator"] == "batch" and batch.run_id != run.run_id


def test_large_test_sets_get_fewer_draws() -> None:
    from freebits_cli.engine.metrics import mi_draws

    assert mi_draws(10, 359) == 10  # digits: every draw
    assert mi_draws(10, 10_000) == 2 and mi_draws(10, 50_000) == 2  # an interval needs two
    assert mi_draws(10, 6_000) == 5
    assert mi_draws(10, 10_000, batch=50) == 10  # per-batch mixtures cost N × B
    assert mi_draws(1, 359) == 1  # asked for one: no interval


def test_status_and_the_sweep_table_show_the_verdict_and_both_au_rules(swept: Path) -> None:
    from typer.testing import CliRunner

    from freebits_cli.cli import app

    runner = CliRunner()
    verdicts = sorted(s["information"] for s in summaries(swept))
    status = runner.invoke(app, ["status", str(swept), "--json"])
    assert status.exit_code == 0, status.output
    rows = [json.loads(line) for line in status.output.splitlines()]
    assert sorted(r["information"] for r in rows) == verdicts
    table = runner.invoke(app, ["status", str(swept)], env={"COLUMNS": "200"})
    assert all(v in table.output for v in verdicts)
    # Re-running the sweep trains nothing and prints the closing table from the files.
    sets = [part for k, v in TINY for part in ("--set", f"{k}={json.dumps(v)}")]
    again = runner.invoke(
        app, ["sweep", *sets, "--device", "cpu", "--out", str(swept)], env={"COLUMNS": "250"}
    )
    assert again.exit_code == 0 and "nothing to train" in again.output, again.output
    for header in ("AU cov", "AU KL", "MI [95%]", "marg. KL", "probe", "information"):
        assert header in again.output
    assert "Cov_x(E_q[z_j|x])" in again.output and all(v in again.output for v in verdicts)
