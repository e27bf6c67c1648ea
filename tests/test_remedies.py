"""The remedies beside free bits: constant β, BN-VAE's normalised μ, and LR decay on a validation
plateau with the best model reloaded — each against a transcription of its reference, packed =
alone on the CPU, and resumed exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sweeps
import torch

from freebits_cli.engine.objective import gaussian_kl_per_dim
from freebits_cli.models import build_model
from freebits_cli.models.mu_norm import EPS, MuNormalised, kl_floor
from freebits_cli.spec import ModelSpec, RunConfig, SweepSpec
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import executor

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    ("model.hidden", [32]),
    ("model.latent_dim", 4),
    ("train.epochs", 2),
    ("train.device", "cpu"),
    ("eval.iwae_samples", 5),
    ("eval.samples", 2),
    ("dataset.train_size", 300),
    ("dataset.test_size", 100),
]
COMPARED = ("test_elbo", "test_recon", "test_kl", "test_iwae_nll", "test_mi", "kl_per_dim")


def small_spec(*extra: tuple[str, Any]) -> SweepSpec:
    return build_spec(None, [*SMALL, *extra])


def summaries(out: Path, name: str = "default") -> dict[str, dict[str, Any]]:
    found = (out / name / "runs").glob("*/summary.json")
    return {p.parent.name: json.loads(p.read_text()) for p in found}


def metrics_rows(out: Path, run_id: str, name: str = "default") -> list[str]:
    """metrics.csv of a run without its wall-clock `seconds` column (the last)."""
    text = (out / name / "runs" / run_id / "metrics.csv").read_text()
    return [line.rsplit(",", 1)[0] for line in text.splitlines()]


def assert_same_runs(a: Path, b: Path) -> None:
    left, right = summaries(a), summaries(b)
    assert left and left.keys() == right.keys()
    for run_id in left:
        for key in COMPARED:
            assert left[run_id][key] == right[run_id][key], (run_id, key)
        assert metrics_rows(a, run_id) == metrics_rows(b, run_id)


class Interrupt(Exception):
    pass


def resume_after(spec: SweepSpec, out: Path, epoch: int) -> None:
    """Train `spec`, stopped after `epoch` epochs, then resumed to the end."""

    def stop(_ids: Any, done: int, _epochs: int) -> None:
        if done == epoch:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweeps.train(spec, out, on_epoch=stop)
    assert {r.start_epoch for r in executor.plan(spec, out).runs} == {epoch}
    sweeps.train(spec, out)


# -- constant β -------------------------------------------------------------------------------


def test_constant_beta_trains_with_beta_max_and_at_one_equals_none(tmp_path: Path) -> None:
    spec = small_spec(
        ("grid.lambda", [0]), ("grid.anneal", ["none", "constant"]), ("train.epochs", 1)
    )
    sweeps.train(spec, tmp_path / "one")
    runs = summaries(tmp_path / "one")
    by_schedule = {s["anneal"]: s for s in runs.values()}
    # β ≡ 1 is the plain ELBO whatever the schedule is called: the same numbers.
    for key in COMPARED:
        assert by_schedule["constant"][key] == by_schedule["none"][key], key
    beta = small_spec(
        ("grid.lambda", [0]),
        ("grid.anneal", ["constant"]),
        ("anneal.beta_max", 0.4),
        ("train.epochs", 1),
    )
    sweeps.train(beta, tmp_path / "beta")
    (run,) = summaries(tmp_path / "beta").values()
    rows = metrics_rows(tmp_path / "beta", run["run_id"])
    header = rows[0].split(",")
    assert float(rows[1].split(",")[header.index("beta")]) == pytest.approx(0.4)
    assert run["test_kl"] > by_schedule["none"]["test_kl"]  # a lighter KL term: a higher rate


# -- BN-VAE -----------------------------------------------------------------------------------


def _bn_model(gamma: float, members: int = 3, latent: int = 5) -> MuNormalised:
    model = build_model(ModelSpec(hidden=(16,), latent_dim=latent, mu_bn_gamma=gamma), (8, 8), 3)
    assert isinstance(model, MuNormalised) and members == 3
    model.reset([torch.Generator().manual_seed(s) for s in range(members)])
    with torch.no_grad():
        model.shift.normal_(0, 0.3, generator=torch.Generator().manual_seed(9))
    return model


def test_mu_norm_is_batchnorm1d_with_a_fixed_weight() -> None:
    """Zhu et al.'s code: `nn.BatchNorm1d(nz)` with its weight frozen at γ (bias learned), applied
    to μ; running statistics at evaluation. Each member is its own BatchNorm."""
    gamma = 0.6
    model = _bn_model(gamma)
    norms = []
    for k in range(3):
        bn = torch.nn.BatchNorm1d(5)
        with torch.no_grad():
            bn.weight.fill_(gamma)
            bn.bias.copy_(model.shift[k, 0])
        norms.append(bn)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # training steps: batch statistics, running statistics updated
        x = torch.rand(3, 12, 64, generator=gen)
        raw, _ = model.inner.encode(x)
        mu, _ = model.encode(x)
        for k, bn in enumerate(norms):
            torch.testing.assert_close(mu[k], bn(raw[k]), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(model.running_mean[k, 0], bn.running_mean)
            torch.testing.assert_close(model.running_var[k, 0], bn.running_var)
    model.eval()
    x = torch.rand(3, 7, 64, generator=gen)
    raw, _ = model.inner.encode(x)
    mu, _ = model.encode(x)
    for k, bn in enumerate(norms):
        torch.testing.assert_close(mu[k], bn.eval()(raw[k]), rtol=1e-6, atol=1e-6)
    # Only the shift learns: γ is a constant and the running statistics take no gradient.
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "running_mean",
        "running_var",
    }


def test_mu_norm_keeps_the_batch_kl_above_zhu_et_als_floor() -> None:
    """KL_bj ≥ ½ μ_bj², and BN fixes the batch's mean and spread of μ_j: the batch-mean KL is at
    least ½ Σ_j (β_j² + γ² v_j/(v_j + ε)) ≈ D·γ²/2, however the encoder collapses σ or μ."""
    gamma, latent = 0.5, 5
    model = _bn_model(gamma, latent=latent)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 64, 64, generator=gen)
    raw, _ = model.inner.encode(x)
    variance = raw.var(-2, correction=0, keepdim=True)
    mu, logvar = model.encode(x)
    # The normalised μ_j has the batch mean β_j and the batch variance γ² v/(v + ε).
    torch.testing.assert_close(mu.mean(-2, keepdim=True), model.shift.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        mu.var(-2, correction=0, keepdim=True), gamma**2 * variance / (variance + EPS)
    )
    floor = kl_floor(model.shift.detach(), variance, gamma)
    for lv in (logvar, torch.zeros_like(logvar), torch.full_like(logvar, -3.0)):
        kl = gaussian_kl_per_dim(mu, lv).sum(-1).mean(-1)  # (K,) batch-mean KL
        assert (kl >= floor - 1e-6).all()
    with torch.no_grad():
        model.shift.zero_()
    mu, _ = model.encode(x)
    kl = gaussian_kl_per_dim(mu, torch.zeros_like(mu)).sum(-1).mean(-1)  # σ = 1: KL = ½ μ²
    torch.testing.assert_close(kl, kl_floor(model.shift.detach(), variance, gamma))
    torch.testing.assert_close(kl, torch.full((3,), latent * gamma**2 / 2), rtol=1e-2, atol=0)


def test_mu_bn_gamma_is_off_by_default_and_keeps_old_run_ids() -> None:
    plain = RunConfig()
    assert "mu_bn_gamma" not in plain.identity()["model"]
    assert not isinstance(build_model(plain.model, (8, 8), 1), MuNormalised)
    bn = build_spec(None, [("model.mu_bn_gamma", 0.5)]).expand()[0]
    assert bn.identity()["model"]["mu_bn_gamma"] == 0.5 and bn.run_id != plain.run_id


def test_bn_vae_packed_equals_alone_and_resumes_exactly(tmp_path: Path) -> None:
    spec = small_spec(
        ("grid.lambda", [0, 0.5]),
        ("grid.seed", [0, 1]),
        ("model.mu_bn_gamma", 0.7),
        ("train.epochs", 3),
    )
    sweeps.train(spec, tmp_path / "packed")
    sweeps.train(spec, tmp_path / "alone", pack_size=1)
    assert_same_runs(tmp_path / "packed", tmp_path / "alone")
    resume_after(spec, tmp_path / "resumed", 2)
    assert_same_runs(tmp_path / "packed", tmp_path / "resumed")
    # The floor holds on the batch statistics, in training: every run keeps a rate ≥ D·γ²/2
    # (less ε's share); at evaluation the running statistics decide.
    for run_id in summaries(tmp_path / "packed"):
        rows = [r.split(",") for r in metrics_rows(tmp_path / "packed", run_id)]
        column = rows[0].index("train_kl")
        assert all(float(r[column]) > 0.5 * 4 * 0.7**2 * 0.95 for r in rows[1:]), run_id
