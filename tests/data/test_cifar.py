"""CIFAR-10 from torchvision's python batches (files the test writes in the real layout): shapes,
channel order, exact 8-bit values, a conv run on them, and clear refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.data import load_dataset, read_cifar_batch
from freebits_cli.errors import DataError
from freebits_cli.spec import DatasetSpec

runner = CliRunner()


def write_cifar(root: Path, per_batch: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch} as torchvision downloads them:
    pickled dicts with bytes keys, b"data" a (N, 3072) uint8 array of R, G, B planes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        (train.append(data) if name != "test_batch" else None)
    return np.concatenate(train), data


def test_loader_keeps_channels_order_and_8_bit_values(tmp_path: Path) -> None:
    train, test = write_cifar(tmp_path)
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset(DatasetSpec(name="cifar10", data_dir=str(data_dir)))
        assert ds.image_shape == (3, 32, 32) and ds.eight_bit
        assert ds.x_train.shape == (40, 3072) and ds.x_test.shape == (8, 3072)
        assert np.array_equal(np.round(ds.x_train * 255).astype(np.uint8), train)
        assert np.array_equal(np.round(ds.x_test * 255).astype(np.uint8), test)
    # Row layout: 1024 red, 1024 green, 1024 blue values; pixel (c, i, j) is c·1024 + 32·i + j.
    image = read_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert image.shape == (8, 3, 32, 32) and image[2, 1, 3, 5] == test[2, 1024 + 32 * 3 + 5]


def test_conv_logistic_run_on_cifar_layout_reports_bits_per_dim(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data", per_batch=16)
    result = runner.invoke(
        app,
        [
            "sweep", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
            "--out", str(tmp_path / "out"), "--lambdas", "0.25", "--epochs", "1",
            "--latent-dim", "2", "--free-bits-mode", "group", "--device", "cpu",
            "--set", "model.arch=conv", "--set", "model.channels=[4,4,4]",
            "--set", "model.latent_maps=2", "--set", "model.latent_dim=32",
            "--set", "free_bits.groups=2", "--set", "model.likelihood=logistic_mixture",
            "--set", "model.mixtures=2", "--set", "eval.iwae_samples=2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = next(tmp_path.glob("out/default/runs/*/metrics.csv")).read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    bits = float(last[header.index("test_bits_per_dim")])
    assert bits == pytest.approx(-float(last[header.index("test_elbo")]) / (3072 * np.log(2)))
    samples = np.load(next(tmp_path.glob("out/default/runs/*/samples.npz")))
    assert tuple(samples["image_shape"]) == (3, 32, 32)
    report = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "out" / "report" / "reconstructions.png").is_file()


def test_missing_and_bad_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not hold cifar-10-batches-py"):
        load_dataset(DatasetSpec(name="cifar10", data_dir=str(tmp_path)))
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(batch, "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 3000), dtype=np.uint8)}, handle)
    with pytest.raises(DataError, match="3000 values, CIFAR-10 has 3072"):
        load_dataset(DatasetSpec(name="cifar10", data_dir=str(tmp_path)))
    # A pickle that would run code is refused, not executed.
    with open(batch, "wb") as handle:
        pickle.dump({b"data": print}, handle)
    with pytest.raises(DataError, match=r"refusing to load builtins\.print"):
        load_dataset(DatasetSpec(name="cifar10", data_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "bernoulli on cifar10's colour 8-bit images"),
        (["--set", "model.likelihood=gaussian"], "dataset.dequantize: uniform"),
        (["--set", "model.likelihood=logistic", "--set", "dataset.binarize=dynamic"], "binarize"),
        (
            [
                "--set",
                "model.arch=conv",
                "--set",
                "model.channels=[4,4,4,4,4,4]",
                "--set",
                "model.likelihood=logistic",
            ],
            "below 1×1",
        ),
    ],
)
def test_likelihood_that_does_not_fit_the_data_exits_2(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    write_cifar(tmp_path / "data")
    args = ["sweep", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--out"]
    result = runner.invoke(app, [*args, str(tmp_path / "out"), "--epochs", "1", *extra])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert not list(tmp_path.glob("out/*/runs/*"))


def test_npz_keeps_image_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    last = rng.integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)  # channels last
    np.savez(tmp_path / "rgb.npz", x_train=last, x_test=last[:2])
    ds = load_dataset(DatasetSpec(name=str(tmp_path / "rgb.npz")))
    assert ds.image_shape == (3, 6, 6) and ds.eight_bit
    assert np.array_equal(np.round(ds.x_train * 255), last.transpose(0, 3, 1, 2).reshape(4, -1))
    np.savez(tmp_path / "floats.npz", x_train=rng.random((4, 5, 5)), x_test=rng.random((2, 5, 5)))
    assert not load_dataset(DatasetSpec(name=str(tmp_path / "floats.npz"))).eight_bit
