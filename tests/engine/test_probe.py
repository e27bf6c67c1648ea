"""Is z useful? Labels follow their examples through every loader, and the linear probe of the code
beats chance on a model that encodes digits, and reads chance where the code is constant."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from freebits_cli.data import load_dataset
from freebits_cli.engine import probe
from freebits_cli.models import PackedVAE
from freebits_cli.spec import DatasetSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_digits_labels_follow_their_images_through_split_and_subsets() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    by_image = {
        row.tobytes(): label for row, label in zip(raw.data / 16.0, raw.target, strict=True)
    }
    for spec in (DatasetSpec(), DatasetSpec(train_size=300, test_size=50, valid_size=100)):
        data = load_dataset(spec)
        for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
            assert y is not None and len(y) == len(x) and y.dtype == np.int64
            expected = [by_image[row.astype(np.float64).tobytes()] for row in x]
            assert y.tolist() == expected


def test_npz_labels_are_read_where_both_are_there(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.random((20, 4, 4)), rng.random((6, 4, 4))
    np.savez(tmp_path / "a.npz", x_train=x_train, x_test=x_test,
             y_train=np.array([3, 7] * 10), y_test=np.array([7, 3, 3, 7, 7, 7]))  # fmt: skip
    data = load_dataset(DatasetSpec(name=str(tmp_path / "a.npz")))
    assert data.y_train.tolist() == [0, 1] * 10 and data.y_test.tolist() == [1, 0, 0, 1, 1, 1]
    np.savez(tmp_path / "b.npz", x_train=x_train, x_test=x_test, y_train=np.zeros(20, int))
    assert load_dataset(DatasetSpec(name=str(tmp_path / "b.npz"))).y_train is None


def test_text_labels_follow_their_sentences_sorted_by_length(tmp_path: Path) -> None:
    lines = ["pos\ta b c d", "neg\ta", "pos\tb b", "neg\tc a b"]
    for name in ("train", "valid"):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("neg\ta b c d e\npos\tb\nneg\ta a\n")
    spec = DatasetSpec(name="text", data_dir=str(tmp_path), strip_label=True)
    data = load_dataset(spec)
    assert data.y_train.tolist() == [1, 0, 1, 0]  # classes by sorted name: neg 0, pos 1
    # The test set is sorted by length (b, a a, a b c d e): its labels move with it.
    assert (data.x_test != 0).sum(1).tolist() == [2, 3, 6]
    assert data.y_test.tolist() == [1, 0, 0]
    assert load_dataset(DatasetSpec(name="text", data_dir=str(tmp_path))).y_train is None
    (tmp_path / "test.txt").write_text("neu\ta b\n")  # a class training never shows
    assert load_dataset(spec).y_test is None


def test_fashion_mnist_labels_from_the_idx_files() -> None:
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST's IDX files are not installed")
    data = load_dataset(DatasetSpec(name="fashion-mnist", test_size=500, train_size=1000))
    assert data.y_test is not None and set(data.y_test.tolist()) <= set(range(10))
    assert len(data.y_train) == 1000 and len(set(data.y_train.tolist())) == 10


Trained = tuple[PackedVAE, torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]


@pytest.fixture(scope="module")
def trained(one_thread_module: None) -> Trained:
    """A pack of two VAEs trained briefly on digits, with the data and labels."""
    from freebits_cli.engine.objective import gaussian_kl_per_dim
    from freebits_cli.models.likelihoods import bernoulli_nll

    data = load_dataset(DatasetSpec())
    x = torch.from_numpy(data.x_train)
    torch.manual_seed(0)
    model = PackedVAE(2, 64, [64], 6, "relu")
    model.reset([torch.Generator().manual_seed(i) for i in range(2)])
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
    return model.eval(), x, data.y_train, torch.from_numpy(data.x_test), data.y_test


def test_the_probe_beats_chance_on_digits_and_reads_chance_on_a_constant_code(
    trained: Trained,
) -> None:
    """Chance is about 1/10 (the commonest test class: 0.125). A VAE trained briefly on digits: its
    means and its samples both classify well above chance. Its encoder fixed to one posterior for
    every x: the means are one point, the samples pure noise — chance either way."""
    model, x_train, y_train, x_test, y_test = trained
    model = copy.deepcopy(model)  # the encoder is zeroed below
    chance = np.bincount(y_test).max() / len(y_test)
    assert chance < 0.13
    means = probe.probe_accuracy(model, x_train, y_train, x_test, y_test)
    drawn = [torch.Generator().manual_seed(9 + i) for i in range(2)]
    samples = probe.probe_accuracy(model, x_train, y_train, x_test, y_test, drawn)
    assert min(means) > 0.7 and min(samples) > 0.4  # four times chance and more
    with torch.no_grad():
        model.to_stats.weight.zero_()
    drawn = [torch.Generator().manual_seed(9 + i) for i in range(2)]
    assert max(probe.probe_accuracy(model, x_train, y_train, x_test, y_test)) <= chance + 1e-9
    noise = probe.probe_accuracy(model, x_train, y_train, x_test, y_test, drawn)
    assert max(noise) < chance + 0.08


def test_a_members_probe_does_not_depend_on_its_pack(trained: Trained) -> None:
    model, x_train, y_train, x_test, y_test = trained
    alone = PackedVAE(1, 64, [64], 6, "relu")
    with torch.no_grad():
        for param, source in zip(alone.parameters(), model.parameters(), strict=True):
            param.copy_(source[1:2])
    packed = probe.codes(model, x_test, [torch.Generator().manual_seed(i) for i in (5, 6)])
    single = probe.codes(alone, x_test, [torch.Generator().manual_seed(6)])
    np.testing.assert_array_equal(packed[1], single[0])
    assert probe.probe_accuracy(alone, x_train, y_train, x_test, y_test) == [
        probe.probe_accuracy(model, x_train, y_train, x_test, y_test)[1]
    ]
