"""What a new spec may change under an existing sweep name, and what spec.yaml then records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from freebits_cli.errors import SpecError
from freebits_cli.results.sweep_folder import changes, check_unchanged, grown
from freebits_cli.spec.files import build_spec, dump_spec


def saved(tmp_path: Path, *overrides: tuple[str, Any], extra: str = "") -> Path:
    folder = tmp_path / "default"
    folder.mkdir(exist_ok=True)
    (folder / "spec.yaml").write_text(dump_spec(build_spec(None, list(overrides))) + extra)
    return folder


def test_fields_that_do_not_shape_numbers_may_change(tmp_path: Path) -> None:
    folder = saved(tmp_path, ("grid.lambda", [0, 1]), extra="slurm: {partition: gpu}\n")
    new = build_spec(
        None,
        [("grid.lambda", [0, 1, 2]), ("train.device", "cpu"), ("dataset.data_dir", "/x")],
    )
    assert changes(yaml.safe_load((folder / "spec.yaml").read_text()), new) == []
    check_unchanged(folder, new)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (("train.epochs", 5), "train.epochs: 60 -> 5"),
        (("train.lr", 0.01), "train.lr: 0.001 -> 0.01"),
        (("model.hidden", [64]), "model.hidden: [256, 128] -> [64]"),
        (("anneal.schedule", "linear"), "anneal.schedule: 'none' -> 'linear'"),
    ],
)
def test_fields_that_shape_numbers_are_refused_by_name(
    tmp_path: Path, override: tuple[str, Any], named: str
) -> None:
    folder = saved(tmp_path, ("grid.lambda", [0, 1]))
    with pytest.raises(SpecError) as info:
        check_unchanged(folder, build_spec(None, [("grid.lambda", [0, 1]), override]))
    assert named in str(info.value) and "--name" in str(info.value)


def test_a_sweep_grows_and_its_spec_lists_every_value(tmp_path: Path) -> None:
    folder = saved(tmp_path, ("grid.lambda", [0, 1]))
    new = build_spec(None, [("grid.lambda", [2]), ("grid.seed", [1, 2])])
    check_unchanged(folder, new)  # more λ values and seeds: the way to grow a sweep
    merged = grown(folder, new)
    assert sorted(merged.grid["lambda"]) == [0, 1, 2]
    assert sorted(merged.grid["seed"]) == [0, 1, 2]  # the old runs' seed 0 stays listed
    ids = {r.run_id for r in merged.expand()}
    old = {r.run_id for r in build_spec(None, [("grid.lambda", [0, 1])]).expand()}
    assert old <= ids


def test_an_unreadable_saved_spec_is_refused(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "spec.yaml").write_bytes(b"\xff\xfe: [")
    with pytest.raises(SpecError, match="--force"):
        check_unchanged(folder, build_spec(None))
