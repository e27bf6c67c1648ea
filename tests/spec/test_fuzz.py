"""Property-based tests of the front door: whatever a spec file, a `--set` or a `.npz` holds, the
tool answers with its own error (one line, exit 2 at the command line), never anything else."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freebits_cli.data import load_dataset
from freebits_cli.errors import DataError, SpecError
from freebits_cli.results.reader import read_samples
from freebits_cli.spec import DatasetSpec, SweepSpec, valid_paths
from freebits_cli.spec.files import build_spec, parse_override
from freebits_cli.sweep import executor

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PATHS = sorted(valid_paths())
SECTIONS = sorted({p.split(".")[0] for p in PATHS})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["digits", "cpu", "cuda:7", "linear", "batch", "1e6", "-0", ".inf", "x.npz"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# A spec shaped like a real one (known sections and fields), with any value in any field.
field_specs = st.dictionaries(
    st.sampled_from([*PATHS, "grid.lambda", "grid.seed", "grid.anneal", "name"]),
    values,
    max_size=6,
)


def tree_of(fields: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in fields.items():
        if path == "name":
            tree["name"] = value
            continue
        section, key = path.split(".", 1)
        node = tree.setdefault(section, {})
        if isinstance(node, dict):
            node[key] = value
    return tree


def only_spec_errors(load: Any, out: Path) -> None:
    """`load()` gives a spec that plans, or raises SpecError; anything else fails the test."""
    try:
        spec = load()
        executor.plan(spec, out)  # run ids must make safe folder names
    except SpecError as exc:
        assert str(exc) and "\n" not in str(exc)


@FUZZ
@given(doc=st.one_of(values, st.dictionaries(st.sampled_from([*SECTIONS, "grid"]), values)))
def test_any_yaml_document_gives_a_spec_or_a_spec_error(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    only_spec_errors(lambda: build_spec(path), tmp_path / "out")


@FUZZ
@given(fields=field_specs)
def test_any_value_in_any_field_gives_a_spec_or_a_spec_error(
    tmp_path: Path, fields: dict[str, Any]
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tree_of(fields)))
    only_spec_errors(lambda: build_spec(path), tmp_path / "out")


@FUZZ
@given(text=st.text(alphabet=string.printable + "λé\x00", max_size=40))
def test_any_yaml_text_gives_a_spec_or_a_spec_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    only_spec_errors(lambda: build_spec(path), tmp_path / "out")


@FUZZ
@given(
    key=st.one_of(st.sampled_from([*PATHS, "grid.lambda", "grid.seed", "name"]), st.text()),
    raw=st.one_of(st.text(max_size=20), values.map(lambda v: yaml.safe_dump(v).strip())),
    sep=st.sampled_from(["=", "", " = "]),
)
def test_any_set_override_gives_a_spec_or_a_spec_error(
    tmp_path: Path, key: str, raw: str, sep: str
) -> None:
    def load() -> SweepSpec:
        return build_spec(None, [parse_override(f"{key}{sep}{raw}")])

    only_spec_errors(load, tmp_path / "out")


def _save(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


HOSTILE = {
    "empty arrays": {"x_train": np.zeros((0, 4)), "x_test": np.zeros((0, 4))},
    "zero-size images": {"x_train": np.zeros((3, 0)), "x_test": np.zeros((3, 0))},
    "one dimension": {"x_train": np.zeros(5), "x_test": np.zeros(5)},
    "NaN pixels": {"x_train": np.full((3, 4), np.nan), "x_test": np.zeros((3, 4))},
    "inf pixels": {"x_train": np.zeros((3, 4)), "x_test": np.full((3, 4), np.inf)},
    "above 1": {"x_train": np.full((3, 4), 2.0), "x_test": np.zeros((3, 4))},
    "int64": {"x_train": np.ones((3, 4), np.int64), "x_test": np.ones((3, 4), np.int64)},
    "complex": {"x_train": np.ones((3, 4), complex), "x_test": np.ones((3, 4), complex)},
    "text": {"x_train": np.array([["a", "b"]] * 3), "x_test": np.array([["a", "b"]] * 3)},
    "bool": {"x_train": np.ones((3, 4), bool), "x_test": np.ones((3, 4), bool)},
    "sizes differ": {"x_train": np.zeros((3, 4)), "x_test": np.zeros((3, 5))},
    "x_test missing": {"x_train": np.zeros((3, 4))},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_npz_data_is_one_data_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "data.npz"
    _save(path, **HOSTILE[case])
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(name=str(path)))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["object arrays", "not a zip", "empty file"])
def test_pickles_and_junk_are_never_loaded(tmp_path: Path, content: str) -> None:
    path = tmp_path / "data.npz"
    if content == "object arrays":  # would run code if loaded with allow_pickle=True
        arrays = np.array([{"a": 1}, None], dtype=object)
        _save(path, x_train=arrays, x_test=arrays)
    else:
        path.write_bytes(b"" if content == "empty file" else b"PK\x03\x04 torn")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(DatasetSpec(name=str(path)))


arrays = st.sampled_from(
    [np.float32, np.float64, np.uint8, np.int64, np.bool_, np.complex64, np.float16]
).flatmap(
    lambda dtype: st.tuples(st.integers(0, 3), st.integers(0, 5)).map(
        lambda shape: np.full(shape, 0.5).astype(dtype)
    )
)


@FUZZ
@given(train=arrays, test=arrays, nan=st.booleans())
def test_any_npz_gives_data_or_a_data_error(
    tmp_path: Path, train: np.ndarray, test: np.ndarray, nan: bool
) -> None:
    if nan and train.size and np.issubdtype(train.dtype, np.floating):
        train[0, 0] = np.nan
    path = tmp_path / "data.npz"
    _save(path, x_train=train, x_test=test)
    try:
        data = load_dataset(DatasetSpec(name=str(path)))
    except DataError:
        return
    assert np.isfinite(data.x_train).all() and data.x_train.min() >= 0 and data.x_train.max() <= 1


@FUZZ
@given(
    names=st.lists(
        st.sampled_from(["originals", "reconstructions", "prior_samples", "image_shape"]),
        max_size=4,
    ),
    data=arrays,
)
def test_any_samples_npz_in_a_run_is_read_or_warned_about(
    tmp_path: Path, names: list[str], data: np.ndarray
) -> None:
    _save(tmp_path / "samples.npz", **{name: data for name in names})
    warnings: list[str] = []
    read_samples(tmp_path, warnings.append)  # never raises
