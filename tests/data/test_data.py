"""Data sets: the bundled digits, IDX files (raw, gzipped, torchvision's layout), .npz, binarisation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import sweeps
from typer.testing import CliRunner

from freebits_cli import data
from freebits_cli.cli import app
from freebits_cli.data import images as image_data
from freebits_cli.data import load_dataset, read_idx, torchvision_images
from freebits_cli.errors import DataError
from freebits_cli.spec import DatasetSpec
from freebits_cli.spec.files import build_spec


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX format: 0x00 0x00 0x08 ndim, then each dimension as a big-endian uint32."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def tiny_images(n: int, seed: int, shape: tuple[int, int] = (3, 4)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_split_files(folder: Path, train: np.ndarray, test: np.ndarray, gz: bool) -> None:
    write_idx(folder / "train-images-idx3-ubyte", train, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", test, gz)


def write_torchvision_raw(root: Path, cls: str, train: np.ndarray, test: np.ndarray) -> None:
    """What torchvision's MNIST/FashionMNIST read: images and labels, uncompressed, in raw/."""
    raw = root / cls / "raw"
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "t10k-images-idx3-ubyte", test)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(len(train), dtype=np.uint8) % 10)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(len(test), dtype=np.uint8) % 10)


def expected_pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


@pytest.fixture()
def no_default_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty download cache and no system folders: only --data-dir or torchvision remain."""
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("FREEBITS_DATA", str(cache))
    monkeypatch.setattr(image_data, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": []})
    return cache


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_range_and_split() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset(DatasetSpec())
    assert ds.name == "digits"
    assert ds.x_train.shape == (1438, 64)
    assert ds.x_test.shape == (359, 64)
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.image_shape == (8, 8)
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    # Grayscale: pixels in between 0 and 1 too (the 0..16 scale divided by 16).
    assert np.isin(np.unique(ds.x_train), np.arange(17) / 16).all()
    assert len(np.unique(ds.x_train)) == 17
    # Train and test partition the 1797 images: none lost, none in both.
    every = np.sort(np.round(load_digits().data / 16.0, 6), axis=0)
    ours = np.sort(np.round(np.concatenate([ds.x_train, ds.x_test]).astype(np.float64), 6), axis=0)
    assert np.array_equal(every, ours)


def test_digits_split_is_the_same_on_every_call() -> None:
    a, b = load_dataset(DatasetSpec()), load_dataset(DatasetSpec(name="digits"))
    assert np.array_equal(a.x_train, b.x_train)
    assert np.array_equal(a.x_test, b.x_test)
    # Not simply the first 80% in file order: the split is shuffled (digits are sorted by writer).
    from sklearn.datasets import load_digits

    first = load_digits().data[:1438].astype(np.float32) / 16.0
    assert not np.array_equal(a.x_train, first)


# ---------------------------------------------------------------------------------------------
# IDX files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("sub", ["", "raw"], ids=["top", "raw-subfolder"])
def test_idx_files_in_data_dir_load_in_order(tmp_path: Path, gz: bool, sub: str) -> None:
    train, test = tiny_images(5, seed=1), tiny_images(2, seed=2)
    write_split_files(tmp_path / sub if sub else tmp_path, train, test, gz)
    ds = load_dataset(DatasetSpec(name="fashion-mnist", data_dir=str(tmp_path)))
    assert ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train, expected_pixels(train))
    np.testing.assert_array_equal(ds.x_test, expected_pixels(test))
    assert ds.x_train[0, 0] == pytest.approx(train[0, 0, 0] / 255.0)
    assert ds.image_shape == (3, 4)


def test_full_size_idx_gives_28_by_28_images(tmp_path: Path) -> None:
    train, test = tiny_images(3, seed=3, shape=(28, 28)), tiny_images(2, seed=4, shape=(28, 28))
    write_split_files(tmp_path, train, test, gz=True)
    ds = load_dataset(DatasetSpec(name="mnist", data_dir=str(tmp_path)))
    assert ds.x_train.shape == (3, 784) and ds.x_test.shape == (2, 784)
    assert ds.image_shape == (28, 28)
    np.testing.assert_array_equal(ds.x_test, expected_pixels(test))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_returns_the_written_array(tmp_path: Path, gz: bool) -> None:
    images = tiny_images(4, seed=5, shape=(2, 3))
    path = write_idx(tmp_path / "x-idx3-ubyte", images, gz)
    got = read_idx(path)
    assert got.dtype == np.uint8
    assert got.shape == (4, 2, 3)
    np.testing.assert_array_equal(got, images)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(
        read_idx(write_idx(tmp_path / "l-idx1-ubyte", labels, gz)), labels
    )


@pytest.mark.parametrize(
    "cut", [1, 10, 14], ids=["payload-short-by-1", "payload-short-by-10", "header-cut"]
)
def test_truncated_idx_file_names_the_file(tmp_path: Path, cut: int) -> None:
    images = tiny_images(2, seed=6, shape=(2, 2))  # 16-byte header + 8 bytes of pixels
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:-cut])
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"this is not an IDX file at all", b"", b"\x00\x00\x0d\x03" + b"\x00" * 20],
    ids=["text", "empty", "float-idx"],
)
def test_non_idx_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "not an IDX file" in str(info.value)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    half = tmp_path / "t10k-images-idx3-ubyte.gz"
    half.write_bytes(gzip.compress(idx_bytes(tiny_images(50, seed=7)))[:40])
    with pytest.raises(DataError) as info:
        read_idx(half)
    assert str(half) in str(info.value)


def test_truncated_file_in_data_dir_fails_at_load(tmp_path: Path) -> None:
    write_split_files(tmp_path, tiny_images(5, seed=1), tiny_images(2, seed=2), gz=False)
    test_file = tmp_path / "t10k-images-idx3-ubyte"
    test_file.write_bytes(test_file.read_bytes()[:-3])
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name="mnist", data_dir=str(tmp_path)))
    assert str(test_file) in str(info.value)


def test_idx_train_and_test_of_different_image_sizes_are_rejected(tmp_path: Path) -> None:
    write_split_files(
        tmp_path, tiny_images(3, seed=1), tiny_images(2, seed=2, shape=(2, 2)), gz=False
    )
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name="mnist", data_dir=str(tmp_path)))
    assert "t10k-images-idx3-ubyte" in str(info.value)
    assert "differ in size" in str(info.value)


@pytest.mark.parametrize("present", [(), ("train",)], ids=["empty", "train-only"])
def test_data_dir_without_files_says_what_to_put_where(tmp_path: Path, present: tuple[str]) -> None:
    if present:
        write_idx(tmp_path / "train-images-idx3-ubyte", tiny_images(2, seed=0))
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name="fashion-mnist", data_dir=str(tmp_path)))
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train-images-idx3-ubyte" in message
    assert "t10k-images-idx3-ubyte" in message
    assert "fashion-mnist" in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# torchvision's layout and the default places


@pytest.mark.parametrize(("name", "cls"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_reads_uncompressed_raw_files(tmp_path: Path, name: str, cls: str) -> None:
    train, test = tiny_images(6, seed=8, shape=(28, 28)), tiny_images(3, seed=9, shape=(28, 28))
    write_torchvision_raw(tmp_path, cls, train, test)
    got_train, got_test = torchvision_images(name, tmp_path, download=False)
    assert got_train.dtype == np.uint8
    np.testing.assert_array_equal(got_train, train)
    np.testing.assert_array_equal(got_test, test)
    # The same folder given as --data-dir is read directly and agrees with torchvision.
    ds = load_dataset(DatasetSpec(name=name, data_dir=str(tmp_path)))
    np.testing.assert_array_equal(ds.x_train, expected_pixels(got_train))
    np.testing.assert_array_equal(ds.x_test, expected_pixels(got_test))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_nothing_local_and_no_download_asks_for_data_dir(
    no_default_places: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    calls: list[tuple[str, Path, bool]] = []

    def offline(name_: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
        calls.append((name_, Path(root), download))
        raise OSError("network unreachable")

    monkeypatch.setattr(image_data, "torchvision_images", offline)
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=name))
    message = str(info.value)
    assert "--data-dir" in message
    assert "train-images-idx3-ubyte" in message and "t10k-images-idx3-ubyte" in message
    assert message.startswith(name)
    assert "\n" not in message
    assert calls == [(name, no_default_places, True)]  # it tried to download into the cache


def test_files_in_the_cache_are_used_without_torchvision(
    no_default_places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("torchvision should not be needed when the files are cached")

    monkeypatch.setattr(image_data, "torchvision_images", must_not_run)
    train, test = tiny_images(4, seed=10), tiny_images(2, seed=11)
    write_split_files(no_default_places / "MNIST" / "raw", train, test, gz=True)
    ds = load_dataset(DatasetSpec(name="mnist"))
    np.testing.assert_array_equal(ds.x_train, expected_pixels(train))
    np.testing.assert_array_equal(ds.x_test, expected_pixels(test))


def test_system_folder_is_searched_before_the_cache(
    tmp_path: Path, no_default_places: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "usr-share"
    system_train = tiny_images(3, seed=12)
    write_split_files(system, system_train, tiny_images(1, seed=13), gz=True)
    write_split_files(no_default_places, tiny_images(3, seed=14), tiny_images(1, seed=15), gz=True)
    monkeypatch.setattr(image_data, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": [str(system)]})
    ds = load_dataset(DatasetSpec(name="fashion-mnist"))
    np.testing.assert_array_equal(ds.x_train, expected_pixels(system_train))


# ---------------------------------------------------------------------------------------------
# .npz


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def test_npz_uint8_is_flattened_and_scaled(tmp_path: Path) -> None:
    x_train, x_test = tiny_images(6, seed=20, shape=(8, 8)), tiny_images(3, seed=21, shape=(8, 8))
    x_train[0, 0, 0], x_train[0, 0, 1] = 0, 255
    path = save_npz(tmp_path / "mine.npz", x_train=x_train, x_test=x_test)
    ds = load_dataset(DatasetSpec(name=str(path)))
    assert ds.x_train.shape == (6, 64) and ds.x_test.shape == (3, 64)
    assert ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train, expected_pixels(x_train))
    np.testing.assert_array_equal(ds.x_test, expected_pixels(x_test))
    assert ds.x_train[0, 0] == 0.0 and ds.x_train[0, 1] == 1.0
    assert ds.image_shape == (8, 8)


def test_npz_floats_in_unit_interval_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(22)
    x_train = rng.random((5, 4, 4)).astype(np.float32)
    x_train[0, 0, 0], x_train[0, 0, 1] = 0.0, 1.0
    x_test = rng.random((2, 16)).astype(np.float64)
    path = save_npz(tmp_path / "floats.npz", x_train=x_train, x_test=x_test)
    ds = load_dataset(DatasetSpec(name=str(path)))
    np.testing.assert_array_equal(ds.x_train, x_train.reshape(5, 16))
    np.testing.assert_allclose(ds.x_test, x_test, rtol=1e-7)
    assert ds.x_test.dtype == np.float32


@pytest.mark.parametrize("bad", [1.5, -0.1, np.nan, np.inf], ids=["above", "below", "nan", "inf"])
def test_npz_floats_outside_unit_interval_are_rejected(tmp_path: Path, bad: float) -> None:
    x_test = np.full((2, 4), 0.5)
    x_test[1, 3] = bad
    path = save_npz(tmp_path / "bad.npz", x_train=np.zeros((3, 4)), x_test=x_test)
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=str(path)))
    assert str(path) in str(info.value)
    assert "x_test" in str(info.value)


def test_npz_missing_x_test_is_named(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "half.npz", x_train=np.zeros((3, 4), dtype=np.uint8))
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=str(path)))
    assert str(path) in str(info.value)
    assert "x_test" in str(info.value)
    assert "x_train" not in str(info.value).split(str(path), 1)[1]


@pytest.mark.parametrize(
    "arrays",
    [
        {"x_train": np.zeros((3, 4), dtype=np.int64), "x_test": np.zeros((2, 4), dtype=np.int64)},
        {"x_train": np.zeros((3, 4), dtype=np.uint8), "x_test": np.zeros((2, 5), dtype=np.uint8)},
        {"x_train": np.zeros((0, 4), dtype=np.uint8), "x_test": np.zeros((2, 4), dtype=np.uint8)},
        {"x_train": np.array([None, None], dtype=object), "x_test": np.zeros((2, 4))},
    ],
    ids=["int64", "size-mismatch", "empty", "pickled-objects"],
)
def test_npz_with_unusable_arrays_is_rejected(
    tmp_path: Path, arrays: dict[str, np.ndarray]
) -> None:
    path = save_npz(tmp_path / "odd.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=str(path)))
    assert str(path) in str(info.value)


def test_corrupt_npz_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a complete zip archive")
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=str(path)))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_npz_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.npz"
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=str(path)))
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


# ---------------------------------------------------------------------------------------------
# binarisation


@pytest.fixture(scope="module")
def digits() -> dict[str, data.Dataset]:
    return {
        mode: load_dataset(DatasetSpec(binarize=mode)) for mode in ("none", "dynamic", "static")
    }


def _is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def test_static_binarization_is_a_fixed_bernoulli_sample(digits: dict[str, data.Dataset]) -> None:
    gray, static = digits["none"], digits["static"]
    assert static.binarize == "static"
    assert _is_binary(static.x_train) and _is_binary(static.x_test)
    assert static.x_train.dtype == np.float32
    # A Bernoulli sample of the grayscale pixels, not a threshold: the means agree closely
    # (92k pixels: the standard error of the mean is about 0.0015).
    assert abs(static.x_train.mean() - gray.x_train.mean()) < 0.01
    assert abs(static.x_test.mean() - gray.x_test.mean()) < 0.02
    assert not np.array_equal(static.x_train, (gray.x_train >= 0.5).astype(np.float32))
    # Pixels that are exactly 0 or 1 stay so.
    assert (static.x_train[gray.x_train == 0.0] == 0.0).all()
    assert (static.x_train[gray.x_train == 1.0] == 1.0).all()
    again = load_dataset(DatasetSpec(binarize="static"))
    assert np.array_equal(again.x_train, static.x_train)
    assert np.array_equal(again.x_test, static.x_test)


def test_dynamic_binarization_keeps_train_gray_and_fixes_test(
    digits: dict[str, data.Dataset],
) -> None:
    gray, dynamic, static = digits["none"], digits["dynamic"], digits["static"]
    assert dynamic.binarize == "dynamic"
    np.testing.assert_array_equal(dynamic.x_train, gray.x_train)
    assert not _is_binary(dynamic.x_train)
    assert _is_binary(dynamic.x_test)
    assert abs(dynamic.x_test.mean() - gray.x_test.mean()) < 0.02
    again = load_dataset(DatasetSpec(binarize="dynamic"))
    np.testing.assert_array_equal(again.x_test, dynamic.x_test)
    # Static and dynamic runs are scored on the same binarised test set, so their ELBOs compare.
    np.testing.assert_array_equal(dynamic.x_test, static.x_test)


def test_no_binarization_leaves_both_gray(digits: dict[str, data.Dataset]) -> None:
    gray = digits["none"]
    assert gray.binarize == "none"
    assert not _is_binary(gray.x_train) and not _is_binary(gray.x_test)
    assert ((gray.x_train > 0) & (gray.x_train < 1)).any()


def test_binarization_applies_to_npz_too(tmp_path: Path) -> None:
    x = np.full((200, 10), 0.3, dtype=np.float32)
    path = save_npz(tmp_path / "gray.npz", x_train=x, x_test=x[:100])
    ds = load_dataset(DatasetSpec(name=str(path), binarize="static"))
    assert _is_binary(ds.x_train) and _is_binary(ds.x_test)
    assert ds.x_train.mean() == pytest.approx(0.3, abs=0.05)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_missing_npz_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["sweep", "--dataset", "missing.npz", "--out", "out", "--epochs", "1", "--device", "cpu"],
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "missing.npz" in errors[0]
    assert "not found" in errors[0]
    assert not list((tmp_path / "out").rglob("summary.json"))


def test_reconstruction_grids_show_the_grayscale_originals(tmp_path: Path) -> None:
    """Binarised runs are scored on a binary sample of the test images, but the grid above the
    reconstructions shows the images themselves (what a reader compares them with)."""
    gray = load_dataset(DatasetSpec(binarize="none"))
    binary = load_dataset(DatasetSpec(binarize="static"))
    assert set(np.unique(binary.x_test)) == {0.0, 1.0} and gray.x_test_shown is None
    np.testing.assert_array_equal(binary.x_test_shown, gray.x_test)
    fields = [("grid.lambda", [0]), ("train.epochs", 1), ("model.hidden", [8])]
    fields += [("dataset.binarize", "static"), ("eval.iwae_samples", 0), ("eval.samples", 4)]
    spec = build_spec(None, [*fields, ("train.device", "cpu")])
    sweeps.train(spec, tmp_path)
    (folder,) = (tmp_path / "default" / "runs").iterdir()
    originals = np.load(folder / "samples.npz")["originals"]
    assert ((originals > 0) & (originals < 1)).any()  # grayscale, not the binary sample
    assert any(np.array_equal(o, row) for o in originals[:1] for row in gray.x_test)


def test_eight_bit_pixels_become_the_same_floats_as_a_cast_and_a_division() -> None:
    """Every byte value maps to the float32 it always did (k / 255 in float32), bit for bit:
    a run's numbers do not move with how the data set is converted."""
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    got = image_data._to_unit_float(pixels, "test")
    expected = pixels.reshape(4, -1).astype(np.float32) / np.float32(255)
    assert got.dtype == np.float32 and got.shape == (4, 64)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
