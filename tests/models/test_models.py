"""Conv VAEs and users' own modules, packed: bit-identical to a pack of one on CPU, training on
Fashion-MNIST-shaped data, and one clear line for a model that cannot run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sweeps
import torch
from typer.testing import CliRunner

from freebits_cli import schema
from freebits_cli.cli import app
from freebits_cli.models import build_model, packing
from freebits_cli.spec import ModelSpec, SweepSpec
from freebits_cli.spec.files import build_spec

runner = CliRunner()
CONV = [
    ("model.arch", "conv"),
    ("model.channels", [4, 8]),
    ("model.dense", 16),
    ("model.latent_dim", 3),
    ("train.epochs", 2),
    ("train.batch_size", 64),
    ("train.device", "cpu"),
    ("eval.iwae_samples", 4),
    ("eval.samples", 2),
]
TINY = [("model.module", "tiny_vae:TinyVAE"), ("model.kwargs", {"width": 12})]


def train(spec: SweepSpec, out: Path, pack_size: int = 0) -> None:
    outcomes = sweeps.train(spec, out, pack_size=pack_size)
    assert all(o.state == "done" for o in outcomes), outcomes


def rows(out: Path) -> dict[str, list[dict[str, str]]]:
    """Every run's metrics.csv rows, without the wall time."""
    found = {}
    for path in sorted((out / "default" / "runs").glob("*/metrics.csv")):
        with open(path) as handle:
            found[path.parent.name] = [
                {k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)
            ]
    return found


@pytest.mark.parametrize("model", [CONV, [*CONV, *TINY]], ids=["conv", "own module"])
def test_packed_equals_pack_of_one_bit_for_bit_with_mixed_settings(
    tmp_path: Path, model: list[tuple[str, Any]]
) -> None:
    # digits are 8×8: the conv sees 1×8×8 images; λ, schedule and free-bits mode mixed in a pack.
    spec = build_spec(
        None,
        [*model, ("grid.lambda", [0, 0.5]), ("grid.anneal", ["none", "linear"])],
    )
    train(spec, tmp_path / "packed")
    train(spec, tmp_path / "single", pack_size=1)
    packed, single = rows(tmp_path / "packed"), rows(tmp_path / "single")
    assert len(packed) == 4 and packed == single  # every column of every epoch, exactly
    elbos = {r[-1]["test_elbo"] for r in packed.values()}
    assert len(elbos) == 4  # the settings really train differently


def _model(spec: ModelSpec, shape: tuple[int, ...], members: int) -> Any:
    model = build_model(spec, shape, members)
    gens = [torch.Generator().manual_seed(k) for k in range(members)]
    model.reset(gens)
    return model


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(arch="conv", channels=(4, 8, 8), dense=16, latent_dim=3, likelihood="logistic"),
        ModelSpec(arch="conv", channels=(4, 8), latent_maps=2, latent_dim=2 * 7 * 7),
        ModelSpec(module="tiny_vae:TinyVAE", latent_dim=3, likelihood="logistic_mixture"),
    ],
    ids=["conv", "latent maps", "own module"],
)
def test_batched_gpu_path_matches_the_member_loop(
    spec: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-kernel path a GPU takes (grouped conv / vmap), run here on the CPU: the same
    function as running each member on its own (the CPU's path), up to float rounding; gradients
    too."""
    model = _model(spec, (28, 28), 3)
    x = torch.rand(3, 5, 784)
    z = torch.randn(3, 5, model.latent_dim)

    def outputs(models: list[Any]) -> list[torch.Tensor]:
        model.zero_grad()
        parts = []
        for k, m in enumerate(models):
            part = slice(k, k + 1) if len(models) > 1 else slice(None)
            mu, logvar = m.encode(x[part])
            params = m.decode(z[part])
            (mu.sum() + logvar.sum() + m.nll(params, x[part]).sum()).backward()
            parts.append((mu, logvar, params))
        stacked = [torch.cat(t) for t in zip(*parts, strict=True)]
        return [*stacked, *(p.grad.clone() for p in model.parameters())]

    loop = outputs(packing.member_views(model))
    monkeypatch.setattr(packing, "batched", lambda device: True)
    batched = outputs([model])
    for a, b in zip(loop, batched, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_conv_sizes_and_latent_maps_are_feature_maps() -> None:
    spec = ModelSpec(arch="conv", channels=(4, 8, 8), latent_maps=3, latent_dim=3 * 4 * 4)
    model = _model(spec, (3, 32, 32), 2)  # 32 -> 16 -> 8 -> 4
    x = torch.rand(2, 6, 3 * 32 * 32)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 6, 48)
    assert model.decode(mu).shape == (2, 6, 3 * 32 * 32)
    # Feature map 1 of member 0 is latents 16..31: change that map's output channel only.
    with torch.no_grad():
        model.to_stats.bias[0, 1] += 1.0
    moved = (model.encode(x)[0] - mu)[0].abs().amax(0)
    assert torch.equal(moved > 0, torch.arange(48).div(16, rounding_mode="floor") == 1)
    odd = _model(ModelSpec(arch="conv", channels=(4, 8, 8, 8)), (28, 28), 1)
    assert odd.sizes == [(28, 28), (14, 14), (7, 7), (3, 3), (1, 1)]
    assert odd.decode(torch.zeros(1, 2, 16)).shape == (1, 2, 784)  # odd sizes restored


def fashion_like(path: Path, n_train: int = 512, n_test: int = 128) -> Path:
    """28×28 uint8 images with structure (bright blobs of random size), like Fashion-MNIST."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]

    def images(n: int) -> np.ndarray:
        cy, cx = rng.uniform(8, 20, (2, n, 1, 1))
        radius = rng.uniform(3, 10, (n, 1, 1))
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        noisy = 255 * blob * rng.uniform(0.6, 1.0, (n, 1, 1)) + rng.normal(0, 8, (n, 28, 28))
        return np.clip(noisy, 0, 255).astype(np.uint8)

    np.savez(path, x_train=images(n_train), x_test=images(n_test))
    return path


def test_conv_logistic_trains_on_fashion_shaped_data(tmp_path: Path) -> None:
    data = fashion_like(tmp_path / "fashion.npz")
    result = runner.invoke(
        app,
        [
            "sweep", "--dataset", str(data), "--out", str(tmp_path), "--lambdas", "0,0.25",
            "--epochs", "4", "--latent-dim", "4", "--device", "cpu",
            "--set", "model.arch=conv", "--set", "model.channels=[8,16]",
            "--set", "model.dense=32", "--set", "model.likelihood=logistic",
            "--set", "train.batch_size=64", "--set", "eval.iwae_samples=4",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for runs in rows(tmp_path).values():
        loss = [float(r["train_loss"]) for r in runs]
        assert loss[-1] < loss[0] - 50  # nats per image: it learns
        last = runs[-1]
        # bits/dim = NLL / (C·H·W · ln 2), from the ELBO with the true KL and from the IWAE bound.
        dims = 28 * 28 * math.log(2)
        assert float(last["test_bits_per_dim"]) == pytest.approx(-float(last["test_elbo"]) / dims)
        iwae = float(last["test_iwae_nll"]) / dims
        assert float(last["test_iwae_bits_per_dim"]) == pytest.approx(iwae)
        assert 0 < float(last["test_iwae_bits_per_dim"]) < 8  # better than uniform over 256
    summary = json.loads(next(tmp_path.glob("default/runs/*/summary.json")).read_text())
    assert summary["test_bits_per_dim"] > 0 and summary["test_iwae_bits_per_dim"] > 0
    report = runner.invoke(app, ["report", str(tmp_path)])
    assert report.exit_code == 0, report.output
    assert "bits/dim" in (tmp_path / "report" / "index.html").read_text()


def test_gaussian_dequantised_trains_with_its_own_noise(tmp_path: Path) -> None:
    data = fashion_like(tmp_path / "fashion.npz", 256, 64)
    extra = ["--set", "model.likelihood=gaussian", "--set", "dataset.dequantize=uniform"]
    base = ["sweep", "--dataset", str(data), "--epochs", "1", "--latent-dim", "2", "--lambdas"]
    base += ["0", "--device"]
    base += ["cpu", "--set", "model.hidden=[16]", "--set", "eval.iwae_samples=0", *extra]
    for out, seeds in (("packed", "0,1"), ("single", "0,1")):
        args = [*base, "--seeds", seeds, "--out", str(tmp_path / out)]
        args += ["--pack-size", "1"] * (out == "single")
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    packed, single = rows(tmp_path / "packed"), rows(tmp_path / "single")
    assert packed == single and len(packed) == 2
    first, second = (r[0] for r in packed.values())
    assert first["train_loss"] != second["train_loss"]  # each seed its own dequantisation noise
    assert float(first["test_bits_per_dim"]) > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "model.module=no_such_pkg.mod:VAE"], "cannot import 'no_such_pkg.mod'"),
        (["--set", "model.module=tiny_vae:Missing"], "has no attribute 'Missing'"),
        (["--set", "model.module=tiny_vae:WrongDecoder"], "WrongDecoder.decode must return"),
        (["--set", "model.module=tiny_vae:WithBatchNorm"], "has buffers"),
        (["--set", "model.module=tiny_vae:TinyVAE", "--set", "model.kwargs={depth: 3}"], "failed"),
        (["--set", "model.module=not a path"], "model.module"),
        (["--set", "model.likelihood=logistic"], "8-bit"),  # digits are 0..16
        (["--set", "model.likelihood=gaussian"], "dataset.dequantize: uniform"),
        (["--set", "dataset.dequantize=uniform"], "dataset.dequantize"),
        (["--set", "model.arch=conv", "--set", "model.channels=[4,4,4,4]"], "model.channels"),
        (["--set", "model.arch=convnet"], "model.arch"),
        (["--set", "model.likelihood=poisson"], "model.likelihood"),
        (
            [
                "--set",
                "model.arch=conv",
                "--set",
                "model.channels=[4]",
                "--set",
                "model.latent_maps=2",
            ],
            "must be latent_maps·H·W = 2·4·4 = 32",
        ),
    ],
)
def test_a_model_that_cannot_run_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = runner.invoke(app, ["sweep", "--out", str(tmp_path), "--epochs", "1", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert not list(tmp_path.glob("default/runs/*")), "nothing is written before the check"


def test_own_module_outputs_are_checked_against_the_likelihood() -> None:
    spec = ModelSpec(module="tiny_vae:TinyVAE", latent_dim=2, likelihood="logistic")
    model = _model(spec, (8, 8), 2)
    assert model.decode(torch.zeros(2, 3, 2)).shape == (2, 3, 2 * 64)  # 2 parameters per pixel
    assert [p.shape[0] for p in model.parameters()] == [2] * len(list(model.parameters()))
    assert schema.METRICS_COLUMNS.index("test_bits_per_dim") > 0
