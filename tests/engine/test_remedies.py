"""The remedies beside free bits: constant β, BN-VAE's normalised μ, and LR decay on a validation
plateau with the best model reloaded — each against a transcription of its reference, packed =
alone on the CPU, and resumed exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sweeps
import torch
from typer.testing import CliRunner

from freebits_cli import schema
from freebits_cli.cli import app
from freebits_cli.engine.objective import gaussian_kl_per_dim
from freebits_cli.engine.plateau import Plateau, after_epoch, stopped
from freebits_cli.engine.step import make_optimizer
from freebits_cli.engine.train import PackTrainer
from freebits_cli.errors import SpecError
from freebits_cli.models import build_model
from freebits_cli.models.mu_norm import EPS, MuNormalised, kl_floor
from freebits_cli.report import build_report
from freebits_cli.report.figures import FigureInput
from freebits_cli.report.info_figures import fig_remedies
from freebits_cli.report.remedies import remedies_markdown, remedies_table
from freebits_cli.results.reader import read_results, strategy
from freebits_cli.results.remedies import remedies, remedy_name
from freebits_cli.spec import ModelSpec, RunConfig, SweepSpec, TrainSpec
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


# -- LR decay on a validation plateau -----------------------------------------------------------


def reference_plateau(
    losses: list[float], lr: float, decay_epoch: int, lr_decay: float, max_decay: int, start: int
) -> tuple[list[float], list[bool], int]:
    """He et al. 2019's loop (jxhe/vae-lagging-encoder text.py), transcribed: the lr each epoch
    trains with, whether it reloads the best model after it, and the epochs it runs."""
    opt_dict = {"not_improved": 0, "lr": lr, "best_loss": 1e4}
    decay_cnt, lrs, reloads = 0, [], []
    for epoch, loss in enumerate(losses):
        lrs.append(opt_dict["lr"])
        reload = False
        if loss > opt_dict["best_loss"]:
            opt_dict["not_improved"] += 1
            if opt_dict["not_improved"] >= decay_epoch and epoch >= start:
                opt_dict["best_loss"] = loss
                opt_dict["not_improved"] = 0
                opt_dict["lr"] = opt_dict["lr"] * lr_decay
                reload = True
                decay_cnt += 1
        else:
            opt_dict["not_improved"] = 0
            opt_dict["best_loss"] = loss
        reloads.append(reload)
        if decay_cnt == max_decay:
            break
    return lrs, reloads, len(lrs)


def replay(elbos: list[float], lr: float, **fields: Any) -> tuple[list[float], list[bool], int]:
    """Our rule (`plateau.after_epoch`) over validation ELBOs, in the reference's terms."""
    train = TrainSpec(lr=lr, lr_decay="plateau", **fields)
    state, lrs, reloads = Plateau(), [], []
    for epoch, elbo in enumerate(elbos, start=1):
        lrs.append(lr * state.scale)
        reloads.append(after_epoch(state, elbo, epoch, train))
        if stopped(state, train):
            break
    return lrs, reloads, len(lrs)


@pytest.mark.parametrize(
    ("patience", "factor", "max_decays", "start"), [(2, 0.5, 5, 0), (1, 0.5, 2, 0), (2, 0.3, 3, 4)]
)
def test_plateau_rule_gives_the_reference_lr_sequence(
    patience: int, factor: float, max_decays: int, start: int
) -> None:
    gen = torch.Generator().manual_seed(patience + max_decays + start)
    for _ in range(20):  # noisy, slowly improving validation losses, with plateaus
        losses = (100 - torch.arange(30) * 0.3 + torch.randn(30, generator=gen) * 1.5).tolist()
        expected = reference_plateau(losses, 1.0, patience, factor, max_decays, start)
        ours = replay(
            [-x for x in losses], 1.0, lr_patience=patience, lr_factor=factor,
            lr_max_decays=max_decays, lr_decay_start=start,
        )  # fmt: skip
        assert ours == expected
    # A hand-checked sequence: patience 2, two worse epochs decay, the third reuses the reset.
    lrs, reloads, epochs = replay([-5, -4, -4.5, -4.6, -4.7, -3, -3.1, -3.2], 1.0)
    assert lrs == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5]
    assert reloads == [False, False, False, True, False, False, False, True]
    assert epochs == 8


PLATEAU = [
    ("train.epochs", 10),
    ("train.lr", 0.2),
    ("train.lr_decay", "plateau"),
    ("train.lr_patience", 1),
    ("train.lr_max_decays", 3),
    ("dataset.valid_size", 100),
    ("eval.iwae_samples", 3),
    ("eval.select", "best_valid"),
    ("grid.lambda", [0, 0.5]),
    ("grid.seed", [0, 1]),
]


def _columns(out: Path, run_id: str) -> dict[str, list[str]]:
    rows = [r.split(",") for r in metrics_rows(out, run_id)]
    return {name: [r[i] for r in rows[1:]] for i, name in enumerate(rows[0])}


def test_plateau_decay_per_member_packed_equals_alone_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = small_spec(*PLATEAU)
    sweeps.train(spec, tmp_path / "packed")
    runs = summaries(tmp_path / "packed")
    decayed_at: dict[str, int] = {}
    for run_id, summary in runs.items():
        columns = _columns(tmp_path / "packed", run_id)
        elbos = [float(v) for v in columns["valid_elbo"]]
        lrs, reloads, epochs = replay(elbos, 0.2, lr_patience=1, lr_max_decays=3)
        # The lr column is the rule's sequence on the run's own validation ELBOs, and a run
        # ends where its decays are spent.
        assert [float(v) for v in columns["lr"]] == lrs and len(elbos) == epochs
        assert summary["lr_decays"] == sum(reloads)
        if any(reloads):
            decayed_at[run_id] = reloads.index(True) + 1
    # The members decayed at their own times, and one stopped before the others.
    assert len(set(decayed_at.values())) > 1 or len(decayed_at) < len(runs)
    assert any(s["lr_decays"] == 3 for s in runs.values())
    assert {len(_columns(tmp_path / "packed", r)["epoch"]) for r in runs} != {10}
    # A run that stops early is scored as at a last epoch (IWAE bound and MI).
    for run in runs.values():
        assert run["test_iwae_nll"] is not None and run["test_mi"] is not None, run["run_id"]
    sweeps.train(spec, tmp_path / "alone", pack_size=1)
    assert_same_runs(tmp_path / "packed", tmp_path / "alone")
    for run_id in runs:
        assert runs[run_id]["best_valid"] == summaries(tmp_path / "alone")[run_id]["best_valid"]
    first = min(decayed_at.values())
    resume_after(spec, tmp_path / "resumed", first)
    assert_same_runs(tmp_path / "packed", tmp_path / "resumed")
    # Killed after a stopping run's last epoch was committed, before it was written up: the
    # resume finishes it first, with the numbers of an uninterrupted sweep.
    retire = PackTrainer._retire_stopped

    def killed(self: PackTrainer) -> Any:
        if any(stopped(m.plateau, self.config.train) for m in self.members):
            raise Interrupt
        return retire(self)

    monkeypatch.setattr(PackTrainer, "_retire_stopped", killed)
    with pytest.raises(Interrupt):
        sweeps.train(spec, tmp_path / "killed")
    monkeypatch.setattr(PackTrainer, "_retire_stopped", retire)
    sweeps.train(spec, tmp_path / "killed")
    assert_same_runs(tmp_path / "packed", tmp_path / "killed")


def test_plateau_decay_reloads_the_best_parameters(tmp_path: Path) -> None:
    spec = small_spec(*PLATEAU[:-1], ("grid.seed", [0]))

    def stop(_ids: Any, done: int, _epochs: int) -> None:
        if done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweeps.train(spec, tmp_path, on_epoch=stop)
    checked = 0
    for folder in (tmp_path / "default" / "runs").iterdir():
        state = torch.load(folder / "checkpoint.pt", weights_only=True)
        elbos = [float(v) for v in _columns(tmp_path, folder.name)["valid_elbo"]]
        decayed = state["plateau"]["decays"] == 1
        assert decayed == (elbos[1] < elbos[0])  # patience 1: a worse epoch 2 decays
        if decayed:  # back at epoch 1's parameters, with a fresh Adam (zero moments and steps)
            assert state["best"]["epoch"] == 1 and state["plateau"]["scale"] == 0.5
            for name, value in state["params"].items():
                assert torch.equal(value, state["best"]["params"][name]), name
            counts = state.get("adam_steps") or {"every parameter": state["adam_step"]}
            assert all(count == 0.0 for count in counts.values()), counts
            assert all((m == 0).all() for ms in state["adam"].values() for m in ms.values())
            checked += 1
    assert checked


def _lone_optimizer(kind: str, param: torch.nn.Parameter, lr: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam([param], lr=lr, eps=1e-8, fused=True)
    return torch.optim.SGD([param], lr=lr, momentum=0.9)


def test_member_optimizers_scale_and_restart_members_alone() -> None:
    """MemberAdam / MemberSGD: member k at lr·scale_k, restarted by `reset_member`, equals a lone
    torch optimizer run at that lr and rebuilt at the restart (He et al.'s fresh optimizers)."""
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(3, 5, 7, generator=gen)
    grads = [torch.randn(3, 5, 7, generator=gen) for _ in range(12)]
    for kind in ("adam", "sgd"):
        packed = torch.nn.Parameter(start.clone())
        optimizer = make_optimizer(
            [packed], 0.1, 1e-8, torch.device("cpu"), False, kind=kind, momentum=0.9
        )
        optimizer.lr_scales = [1.0, 0.5, 0.25]
        for i, g in enumerate(grads):
            if i == 6:
                optimizer.reset_member(1)
            packed.grad = g.clone()
            optimizer.step()
        for k, scale in enumerate([1.0, 0.5, 0.25]):
            alone = torch.nn.Parameter(start[k].clone())
            lone = _lone_optimizer(kind, alone, 0.1 * scale)
            for i, g in enumerate(grads):
                if i == 6 and k == 1:
                    lone = _lone_optimizer(kind, alone, 0.1 * scale)
                alone.grad = g[k].clone()
                lone.step()
            assert torch.equal(packed.detach()[k], alone.detach()), (kind, k)


def test_plateau_settings_refuse_bad_values_in_one_line() -> None:
    cases = [
        ([("train.lr_decay", "plateau")], "train.lr_decay"),  # no validation set
        ([("train.lr_decay", "sometimes")], "train.lr_decay"),
        ([("train.lr_factor", 1.5)], "train.lr_factor"),
        ([("train.lr_patience", 0)], "train.lr_patience"),
        ([("train.lr_max_decays", 0)], "train.lr_max_decays"),
        ([("model.mu_bn_gamma", -1.0)], "model.mu_bn_gamma"),
        ([("free_bits.mode", "example_totl")], "free_bits.mode"),
    ]
    for fields, where in cases:
        with pytest.raises(SpecError) as error:
            build_spec(None, fields)
        assert where in str(error.value) and "\n" not in str(error.value)


# -- the comparison -----------------------------------------------------------------------------


def test_remedies_are_named_from_the_config() -> None:
    def name(**fields: Any) -> str:
        return remedy_name(remedies({k.replace("__", "."): v for k, v in fields.items()}))

    assert name() == "plain VAE"
    assert name(anneal__schedule="none", anneal__beta_max=0.4) == "plain VAE"  # none: β ≡ 1
    assert name(anneal__schedule="constant", anneal__beta_max=1.0) == "plain VAE"
    assert name(anneal__schedule="constant", anneal__beta_max=0.4) == "β < 1"
    assert name(anneal__schedule="linear", anneal__beta_max=0.4) == "β < 1 + KL warm-up"
    assert name(anneal__schedule="cyclical", free_bits__lambda=0.5) == "cyclical β + free bits"
    assert name(free_bits__lambda=0.25, free_bits__mode="example_total") == (
        "free bits (example_total)"
    )
    assert name(model__mu_bn_gamma=0.6, train__lr_decay="plateau") == "BN-VAE + plateau LR"
    assert name(pretrain__epochs=5, free_bits__lambda=0.25) == "pretraining + free bits"
    assert remedy_name(("BN-VAE", "plateau LR"), common=("plateau LR",)) == "BN-VAE"
    # Exercise 2's strategies: a constant β is not annealing.
    assert strategy(0.0, "constant") == "baseline" and strategy(0.5, "constant") == "free bits only"
    assert strategy(0.5, "linear") == "both"


def test_remedies_table_takes_each_remedys_best_setting_over_seeds(tmp_path: Path) -> None:
    spec = small_spec(
        ("grid.anneal", ["constant", "linear"]),
        ("grid.lambda", [0, 0.5, 1.0]),
        ("grid.seed", [0, 1]),
        ("anneal.beta_max", 0.4),
        ("train.epochs", 1),
        ("eval.iwae_samples", 0),
    )
    sweeps.train(spec, tmp_path)
    runs = read_results(tmp_path / "default")
    table = remedies_table(runs)
    assert table.attrs["common"] == ("β < 1",)
    expected = ["plain VAE", "KL warm-up", "free bits", "KL warm-up + free bits"]
    assert list(table["remedy"]) == expected
    assert list(table["settings"]) == [1, 1, 2, 2] and list(table["runs"]) == [2, 2, 4, 4]
    done = runs.table
    for _, row in table.iterrows():
        annealed = row["remedy"].startswith("KL warm-up")
        free = done[(done["anneal"] == ("linear" if annealed else "constant"))]
        free = free[(free["lambda"] > 0) == ("free bits" in row["remedy"])]
        means = free.groupby("lambda")["test_elbo"].mean()
        assert row["test_elbo_mean"] == pytest.approx(means.max())
        assert row["lambda"] == means.idxmax()
        seeds = free[free["lambda"] == row["lambda"]]["test_mi"]
        assert row["test_mi_mean"] == pytest.approx(seeds.mean())
    text = remedies_markdown(table)
    assert "| KL warm-up + free bits |" in text and "Every run: β < 1." in text
    report = build_report(tmp_path / "default")  # the page and remedies.csv show the same rows
    written = pd.read_csv(report.out_dir / schema.REMEDIES_CSV)
    assert list(written["remedy"]) == expected
    assert written["test_elbo_mean"].tolist() == pytest.approx(table["test_elbo_mean"].tolist())
    page = report.index_html.read_text(encoding="utf-8")
    section = page[page.index('id="remedies"') :]
    assert all(f"<td>{name}</td>" in section for name in expected)
    assert "used by every run: β &lt; 1" in section
    assert (report.out_dir / "remedies.png").is_file()
    empty = pd.DataFrame()
    inp = FigureInput(runs.table, empty, [], {}, {}, {}, [], {}, {}, empty, 0.9, remedies=table)
    (ax,) = fig_remedies(inp).axes  # NLL against MI: one marker per remedy, at its numbers
    assert [t.get_text() for t in ax.get_legend().get_texts()] == expected
    points = [line.get_xydata()[0] for line in ax.get_lines() if line.get_marker() == "o"]
    nll = table.get("test_iwae_nll_mean", -table["test_elbo_mean"])  # −ELBO without IWAE
    assert [x for p in points for x in p] == pytest.approx(
        [x for p in zip(table["test_mi_mean"], nll, strict=True) for x in p]
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "train.lr_decay=plateau"], "train.lr_decay"),
        (["--set", "train.lr_factor=2"], "train.lr_factor"),
        (["--set", "model.mu_bn_gamma=-0.5"], "model.mu_bn_gamma"),
        (["--anneal", "constnt"], "anneal.schedule"),
        (["--free-bits-mode", "example_totals"], "free_bits.mode"),
    ],
)
def test_bad_remedy_values_on_the_command_line_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = CliRunner().invoke(app, ["sweep", "--out", str(tmp_path), "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_remedies_spec_validates_and_dry_runs(tmp_path: Path) -> None:
    spec = Path(__file__).resolve().parents[2] / "configs" / "remedies.yaml"
    runs = build_spec(spec).expand()
    assert len(runs) == 48 and {r.train.lr_decay for r in runs} == {"plateau"}
    assert {(r.anneal.schedule, r.anneal.beta_max) for r in runs} == {
        ("constant", 1.0), ("constant", 0.4), ("linear", 1.0), ("linear", 0.4),
    }  # fmt: skip
    result = CliRunner().invoke(
        app, ["sweep", str(spec), "--out", str(tmp_path), "--dry-run", "--no-pilot"]
    )
    assert result.exit_code == 0, result.output
    assert "48 runs" in result.output and not (tmp_path / "remedies" / "runs").exists()


def test_remedies_over_several_sweeps_name_only_what_varies_within_each(tmp_path: Path) -> None:
    from report_fixtures import make_sweep

    def numbers(lam: float, anneal: str, seed: int) -> dict[str, Any]:
        return {"elbo": -90 - lam - seed, "kl": 1 + lam, "active_units": 2, "mi": 0.5}

    for name, latent in (("small", 4), ("large", 8)):
        make_sweep(tmp_path / name, [0, 1], ["none"], [0, 1], numbers, latent_dim=latent)
    table = remedies_table(read_results(tmp_path))
    assert set(table["sweep"]) == {"large", "small"}
    # latent_dim differs between the sweeps, never within one: no cell names it
    assert all("latent" not in cell for cell in table["setting"]), list(table["setting"])
    assert all(len(cell) < 40 for cell in table["setting"])
