"""Sweep specs: grid expansion, run ids, validation, overrides, YAML files and the CLI's spec errors."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.errors import SpecError
from freebits_cli.spec import (
    AnnealSpec,
    FreeBitsSpec,
    ModelSpec,
    RunConfig,
    SweepSpec,
    TrainSpec,
    parse_spec,
)
from freebits_cli.spec.files import build_spec, dump_spec, load_yaml, parse_override

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
HASH = r"[0-9a-f]{6}"
RUN_ID_IN_TEXT = re.compile(r"lam[0-9.e+-]+?-(?:[a-z]+-)?[a-z]+-s\d+-[0-9a-f]{6}")


def _settings(spec: SweepSpec) -> set[tuple[float, str, int]]:
    return {(r.free_bits.lam, r.anneal.schedule, r.train.seed) for r in spec.expand()}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# grid sizes


def test_default_spec_expands_to_five_lambdas_with_default_fields() -> None:
    runs = SweepSpec().expand()
    assert len(runs) == 5
    assert sorted(r.free_bits.lam for r in runs) == [0.0, 0.1, 0.5, 1.0, 2.0]
    # Everything but λ is the built-in default.
    base = RunConfig()
    for run in runs:
        assert run.model == base.model == ModelSpec()
        assert run.train == base.train
        assert run.dataset.name == "digits"
        assert run.anneal.schedule == "none"
    assert len(build_spec(None).expand()) == 5


def test_grid_product_of_lambda_anneal_seed_gives_30_runs() -> None:
    lambdas = [0, 0.1, 0.5, 1, 2]
    spec = parse_spec(
        {"grid": {"lambda": lambdas, "anneal": ["none", "linear"], "seed": [0, 1, 2]}}
    )
    runs = spec.expand()
    assert len(runs) == 30
    assert len({r.run_id for r in runs}) == 30
    expected = set(itertools.product([float(x) for x in lambdas], ["none", "linear"], [0, 1, 2]))
    assert _settings(spec) == expected
    assert spec.grid_paths() == ["free_bits.lambda", "anneal.schedule", "train.seed"]


def test_grid_alias_mode_sweeps_free_bits_mode() -> None:
    spec = parse_spec({"grid": {"mode": ["batch", "example", "total"], "lambda": [0.5]}})
    runs = spec.expand()
    assert sorted(r.free_bits.mode for r in runs) == ["batch", "example", "total"]
    assert {r.free_bits.lam for r in runs} == {0.5}


def test_grid_accepts_full_field_paths() -> None:
    spec = parse_spec(
        {"grid": {"model.latent_dim": [8, 16], "free_bits.lambda": [0, 1], "train.lr": [1e-3]}}
    )
    runs = spec.expand()
    assert len(runs) == 4
    assert {(r.model.latent_dim, r.free_bits.lam) for r in runs} == {
        (8, 0.0),
        (8, 1.0),
        (16, 0.0),
        (16, 1.0),
    }
    # The swept field is an int in every run, not the raw YAML value.
    assert all(type(r.model.latent_dim) is int for r in runs)
    assert spec.grid_paths() == ["model.latent_dim", "free_bits.lambda", "train.lr"]
    assert runs[0].setting(spec.grid_paths())["model.latent_dim"] in (8, 16)


def test_grid_duplicate_values_are_dropped() -> None:
    spec = parse_spec({"grid": {"lambda": [0, 0.0, 0.5, "0.5", 1, 1.0], "seed": [3, 3]}})
    runs = spec.expand()
    assert len(runs) == 3
    assert sorted(r.free_bits.lam for r in runs) == [0.0, 0.5, 1.0]
    assert {r.train.seed for r in runs} == {3}


def test_grid_scalar_value_is_a_single_point_and_empty_grid_is_one_run() -> None:
    spec = parse_spec({"grid": {"lambda": 0.25}})
    assert [r.free_bits.lam for r in spec.expand()] == [0.25]
    only = parse_spec({"free_bits": {"lambda": 2}, "grid": {}}).expand()
    assert len(only) == 1 and only[0].free_bits.lam == 2.0


# ---------------------------------------------------------------------------------------------
# run ids


def test_run_id_has_readable_prefix_and_short_hash() -> None:
    run = RunConfig(
        free_bits=FreeBitsSpec(lam=0.5),
        anneal=AnnealSpec(schedule="linear"),
        train=TrainSpec(seed=0),
    )
    assert re.fullmatch(rf"lam0\.5-linear-s0-{HASH}", run.run_id)
    other_mode = RunConfig(free_bits=FreeBitsSpec(lam=2, mode="example"), train=TrainSpec(seed=7))
    assert re.fullmatch(rf"lam2-example-none-s7-{HASH}", other_mode.run_id)
    # Equal configs built separately get equal ids.
    twin = RunConfig(
        free_bits=FreeBitsSpec(lam=0.5),
        anneal=AnnealSpec(schedule="linear"),
        train=TrainSpec(seed=0),
    )
    assert twin.run_id == run.run_id


def test_run_ids_differ_whenever_any_field_differs() -> None:
    base = RunConfig()
    variants = [
        base,
        RunConfig(model=ModelSpec(latent_dim=8)),
        RunConfig(model=ModelSpec(hidden=(256,))),
        RunConfig(train=TrainSpec(lr=3e-4)),
        RunConfig(train=TrainSpec(epochs=61)),
        RunConfig(train=TrainSpec(batch_size=64)),
        RunConfig(anneal=AnnealSpec(warmup_epochs=5)),
        RunConfig(free_bits=FreeBitsSpec(groups=2)),
    ]
    ids = [v.run_id for v in variants]
    assert len(set(ids)) == len(ids)
    # Same readable prefix, so only the hash tells them apart.
    assert {i.rsplit("-", 1)[0] for i in ids} == {"lam0-none-s0"}


_SUBPROCESS_IDS = """
import json
from freebits_cli.spec import parse_spec
spec = parse_spec({"grid": {"lambda": [0, 0.1, 0.5], "anneal": ["none", "cyclical"],
                            "seed": [0, 1], "model.latent_dim": [4, 32]}})
print(json.dumps([r.run_id for r in spec.expand()]))
"""


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_run_ids_are_stable_across_processes(hash_seed: str) -> None:
    spec = parse_spec(
        {
            "grid": {
                "lambda": [0, 0.1, 0.5],
                "anneal": ["none", "cyclical"],
                "seed": [0, 1],
                "model.latent_dim": [4, 32],
            }
        }
    )
    here = [r.run_id for r in spec.expand()]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_IDS],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    there = json.loads(out.stdout)
    assert len(here) == 24
    assert there == here


# ---------------------------------------------------------------------------------------------
# validation: every error is a SpecError naming the field, on one line

BAD_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown section", {"modle": {"latent_dim": 8}}, "modle", "did you mean 'model'"),
    ("unknown field", {"model": {"latnt_dim": 8}}, "model.latnt_dim", "did you mean 'latent_dim'"),
    ("string epochs", {"train": {"epochs": "ten"}}, "train.epochs", "integer"),
    ("fractional epochs", {"train": {"epochs": 2.5}}, "train.epochs", "integer"),
    ("bool epochs", {"train": {"epochs": True}}, "train.epochs", "integer"),
    ("list lr", {"train": {"lr": [0.1]}}, "train.lr", "number"),
    ("negative lambda", {"free_bits": {"lambda": -0.1}}, "free_bits.lambda", ">= 0"),
    ("nan lambda", {"free_bits": {"lambda": float("nan")}}, "free_bits.lambda", "finite"),
    ("inf lambda", {"free_bits": {"lambda": float("inf")}}, "free_bits.lambda", "finite"),
    ("nan string lambda", {"free_bits": {"lambda": "nan"}}, "free_bits.lambda", "finite"),
    ("zero epochs", {"train": {"epochs": 0}}, "train.epochs", "> 0"),
    ("negative epochs", {"train": {"epochs": -3}}, "train.epochs", "> 0"),
    ("zero batch", {"train": {"batch_size": 0}}, "train.batch_size", "> 0"),
    ("zero lr", {"train": {"lr": 0}}, "train.lr", "> 0"),
    ("negative lr", {"train": {"lr": -1e-3}}, "train.lr", "> 0"),
    ("inf lr", {"train": {"lr": float("inf")}}, "train.lr", "finite"),
    (
        "bad schedule",
        {"anneal": {"schedule": "linaer"}},
        "anneal.schedule",
        "did you mean 'linear'",
    ),
    ("bad mode", {"free_bits": {"mode": "batches"}}, "free_bits.mode", "'batches'"),
    (
        "groups not dividing",
        {"model": {"latent_dim": 16}, "free_bits": {"groups": 3}},
        "free_bits.groups",
        "divide",
    ),
    ("zero groups", {"free_bits": {"groups": 0}}, "free_bits.groups", "divide"),
    ("zero ratio", {"anneal": {"ratio": 0}}, "anneal.ratio", "(0, 1]"),
    ("ratio above one", {"anneal": {"ratio": 1.5}}, "anneal.ratio", "(0, 1]"),
    ("negative ratio", {"anneal": {"ratio": -0.5}}, "anneal.ratio", "(0, 1]"),
    ("device gpu", {"train": {"device": "gpu"}}, "train.device", "'gpu'"),
    ("device cuda:x", {"train": {"device": "cuda:x"}}, "train.device", "cuda:x"),
    ("device auto+cuda", {"train": {"device": "auto,cuda:1"}}, "train.device", "auto,cuda:1"),
    ("device cpu+cuda", {"train": {"device": "cpu,cuda:0"}}, "train.device", "cpu,cuda:0"),
    ("name with slash", {"name": "a/b"}, "name", "no slashes"),
    ("name dotdot", {"name": ".."}, "name", "'..'"),
    ("name escaping", {"name": "../escape"}, "name", "../escape"),
    ("empty name", {"name": ""}, "name", "''"),
    ("bad grid key", {"grid": {"lamda": [0, 1]}}, "grid.lamda", "did you mean 'lambda'"),
    ("bad grid path", {"grid": {"model.latnt_dim": [8]}}, "grid.model.latnt_dim", "unknown field"),
    ("grid value invalid", {"grid": {"lambda": [0, -1]}}, "free_bits.lambda", "got -1"),
    ("grid value wrong type", {"grid": {"seed": [0, "one"]}}, "train.seed", "integer"),
    ("empty grid list", {"grid": {"lambda": []}}, "grid.lambda", "at least one value"),
    (
        "grid path twice",
        {"grid": {"lambda": [0], "free_bits.lambda": [1]}},
        "grid.free_bits.lambda",
        "second time",
    ),
    ("grid not a mapping", {"grid": [0, 1]}, "grid", "mapping"),
    ("empty hidden", {"model": {"hidden": []}}, "model.hidden", "positive"),
    ("zero width", {"model": {"hidden": [64, 0]}}, "model.hidden", "positive"),
    ("zero latents", {"model": {"latent_dim": 0}}, "model.latent_dim", "> 0"),
    ("bad dataset", {"dataset": {"name": "imagenet"}}, "dataset.name", "'imagenet'"),
    ("bad binarize", {"dataset": {"binarize": "yes"}}, "dataset.binarize", "'yes'"),
    ("section not mapping", {"train": 5}, "train", "mapping"),
    ("beta_start above max", {"anneal": {"beta_start": 2.0}}, "anneal.beta_start", "beta_max"),
]


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_invalid_spec_raises_spec_error_naming_the_field(
    raw: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    exc = info.value
    assert exc.field == field
    message = str(exc)
    assert "\n" not in message
    assert message.startswith(f"{field}: ")
    assert fragment in message


@pytest.mark.parametrize(
    ("raw", "path", "expected"),
    [
        ({"free_bits": {"lambda": 0}}, "free_bits.lambda", 0.0),
        ({"anneal": {"ratio": 1.0}}, "anneal.ratio", 1.0),
        ({"model": {"latent_dim": 16}, "free_bits": {"groups": 4}}, "free_bits.groups", 4),
        ({"train": {"device": "cuda:0,cuda:1"}}, "train.device", "cuda:0,cuda:1"),
        ({"train": {"device": "cpu"}}, "train.device", "cpu"),
        ({"train": {"device": "cuda"}}, "train.device", "cuda"),
        ({"name": "fashion-lambda_sweep.v2"}, "name", "fashion-lambda_sweep.v2"),
        ({"dataset": {"name": "mine.npz"}}, "dataset.name", "mine.npz"),
    ],
)
def test_boundary_values_are_accepted(raw: dict[str, Any], path: str, expected: Any) -> None:
    tree = parse_spec(raw).to_dict()
    for part in path.split("."):
        tree = tree[part]
    assert tree == expected


def test_string_numbers_are_coerced_to_field_types() -> None:
    spec = parse_spec({"train": {"epochs": "5", "lr": "3e-4"}, "free_bits": {"lambda": "1"}})
    assert spec.train.epochs == 5 and type(spec.train.epochs) is int
    assert spec.train.lr == pytest.approx(3e-4) and type(spec.train.lr) is float
    assert spec.free_bits.lam == 1.0 and type(spec.free_bits.lam) is float


# ---------------------------------------------------------------------------------------------
# build_spec and overrides


def test_parse_override_parses_values_as_yaml() -> None:
    assert parse_override("model.hidden=[400]") == ("model.hidden", [400])
    assert parse_override(" train.epochs = 3") == ("train.epochs", 3)
    assert parse_override("dataset.data_dir=") == ("dataset.data_dir", None)
    assert parse_override("name=a=b") == ("name", "a=b")


def test_set_hidden_and_lr_reach_the_fields() -> None:
    spec = build_spec(None, [parse_override("model.hidden=[400]"), parse_override("train.lr=3e-4")])
    assert spec.model.hidden == (400,)
    assert isinstance(spec.train.lr, float)
    assert spec.train.lr == 0.0003
    assert all(r.model.hidden == (400,) and r.train.lr == 0.0003 for r in spec.expand())
    # Everything else keeps its default.
    assert spec.model.latent_dim == ModelSpec().latent_dim
    assert spec.train.epochs == TrainSpec().epochs


def test_single_lambda_replaces_the_sweep_over_lambda() -> None:
    spec = build_spec(None, [parse_override("free_bits.lambda=1")])
    assert "lambda" not in spec.grid
    runs = spec.expand()
    assert len(runs) == 1
    assert runs[0].free_bits.lam == 1.0


def test_single_value_also_drops_a_grid_key_given_by_full_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yaml", "grid:\n  free_bits.lambda: [0, 1]\n  seed: [0, 1]\n")
    spec = build_spec(path, [("free_bits.lambda", 0.25)])
    assert list(spec.grid) == ["seed"]
    assert _settings(spec) == {(0.25, "none", 0), (0.25, "none", 1)}


def test_grid_override_replaces_full_path_grid_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yaml", "grid:\n  free_bits.lambda: [0, 1]\n  seed: [0, 1]\n")
    assert len(build_spec(path).expand()) == 4
    spec = build_spec(path, [("grid.lambda", [2, 3, 4])])
    assert "free_bits.lambda" not in spec.grid
    assert spec.grid["lambda"] == [2, 3, 4]
    assert _settings(spec) == set(itertools.product([2.0, 3.0, 4.0], ["none"], [0, 1]))


def test_overrides_apply_in_order_and_merge_into_spec_sections(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.yaml", "train: {epochs: 5}\nmodel: {latent_dim: 8}\n")
    spec = build_spec(
        path, [("train.batch_size", 32), ("train.epochs", 7), ("train.epochs", 9), ("name", "x")]
    )
    assert spec.train.epochs == 9
    assert spec.train.batch_size == 32
    assert spec.model.latent_dim == 8
    assert spec.model.hidden == ModelSpec().hidden  # a partial section keeps the other defaults
    assert spec.name == "x"


@pytest.mark.parametrize(
    ("override", "field", "fragment"),
    [
        (("model.latnt_dim", 8), "--set model.latnt_dim", "did you mean 'latent_dim'"),
        (("modle.latent_dim", 8), "--set modle", "did you mean 'model'"),
        (("nonsense.x", 1), "--set nonsense", "unknown section"),
        (("free_bits.lam", 1), "--set free_bits.lam", "did you mean 'lambda'"),
        (("grid.lamda", [0]), "grid.lamda", "did you mean 'lambda'"),
        (("train.lr", "fast"), "train.lr", "number"),
        (("grid.lambda", [0, -2]), "free_bits.lambda", "got -2"),
    ],
)
def test_bad_override_raises_spec_error(
    override: tuple[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as info:
        build_spec(None, [override])
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["train.lr", "", "model.hidden: [4]"])
def test_override_without_equals_sign_is_rejected(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_override(text)
    assert info.value.field == "--set"
    assert "key.path=value" in str(info.value)


def test_override_with_unparsable_value_is_rejected() -> None:
    with pytest.raises(SpecError) as info:
        parse_override("model.hidden=[1, 2")
    assert info.value.field == "--set model.hidden"


# ---------------------------------------------------------------------------------------------
# YAML files


def test_missing_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        build_spec(path)
    assert info.value.field == str(path)
    assert "not found" in str(info.value)


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.yaml", "name: x\nmodel: {latent_dim: [8\n")
    with pytest.raises(SpecError) as info:
        build_spec(path)
    assert info.value.field == str(path)
    assert "invalid YAML" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError):
        load_yaml(path)


def test_yaml_list_is_not_a_spec(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.yaml", "- lambda: 0\n- lambda: 1\n")
    with pytest.raises(SpecError) as info:
        build_spec(path)
    assert info.value.field == str(path)
    assert "mapping" in str(info.value)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_spec_file_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path / "empty.yaml", text)
    with pytest.raises(SpecError) as info:
        build_spec(path)
    assert info.value.field == str(path) and "empty" in str(info.value)


def test_unsafe_yaml_tags_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "evil.yaml", "name: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(SpecError) as info:
        build_spec(path)
    assert info.value.field == str(path)


def test_default_yaml_matches_builtin_defaults() -> None:
    path = ROOT / "configs" / "default.yaml"
    assert build_spec(path) == SweepSpec()
    assert parse_spec(load_yaml(path)) == SweepSpec()
    # Every field of every section is spelled out in the file, so it documents all defaults.
    raw = load_yaml(path)
    defaults = SweepSpec().to_dict()
    for section, fields in defaults.items():
        if isinstance(fields, dict) and section != "grid":
            assert set(raw[section]) == set(fields), section


def test_configs_folder_is_not_empty() -> None:
    names = {p.name for p in CONFIGS}
    assert {"default.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_loads_and_validates(path: Path) -> None:
    raw = load_yaml(path)
    spec = build_spec(path)
    assert spec.name == raw.get("name", "default")
    runs = spec.expand()
    distinct = 1
    for values in spec.grid.values():
        distinct *= len({json.dumps(v) for v in values})
    assert len(runs) == distinct > 0
    # Values written in the file made it into the spec.
    for section, fields in raw.items():
        if section in ("name", "grid"):
            continue
        for key, value in fields.items():
            got = spec.to_dict()[section][key]
            assert got == value or got == pytest.approx(value), f"{section}.{key}"


# ---------------------------------------------------------------------------------------------
# dump_spec round trip


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {
            "name": "custom-sweep",
            "dataset": {"name": "mnist", "data_dir": "/data/mnist", "binarize": "dynamic"},
            "model": {"hidden": [32], "latent_dim": 6, "activation": "tanh"},
            "train": {"lr": 3e-4, "epochs": 3, "device": "cuda:0,cuda:1"},
            "free_bits": {"mode": "group", "groups": 3},
            "anneal": {"warmup_steps": 100, "cycles": 2, "ratio": 1.0},
            "eval": {"mi": False, "iwae_samples": 0},
            "grid": {
                "lambda": [0, 0.25],
                "anneal": ["linear", "cyclical"],
                "model.hidden": [[8], [16, 8]],
            },
        },
    ],
    ids=["defaults", "custom"],
)
def test_dump_then_build_round_trips(tmp_path: Path, raw: dict[str, Any]) -> None:
    spec = parse_spec(raw)
    text = dump_spec(spec)
    path = _write(tmp_path / "spec.yaml", text)
    again = build_spec(path)
    assert again == spec
    assert [r.run_id for r in again.expand()] == [r.run_id for r in spec.expand()]
    assert yaml.safe_load(text)["name"] == spec.name


# ---------------------------------------------------------------------------------------------
# CLI


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_cli_dry_run_lists_runs_and_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app, ["sweep", "--dry-run", "--lambdas", "0,1", "--seeds", "0,1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = {
        r.run_id
        for r in build_spec(None, [("grid.lambda", [0, 1]), ("grid.seed", [0, 1])]).expand()
    }
    assert len(expected) == 4
    shown = set(RUN_ID_IN_TEXT.findall(result.output))
    assert shown == expected
    assert "4 runs, 4 to train" in result.output
    assert not (out / "default" / "runs").exists()
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--lambdas", "0,-1"], "free_bits.lambda"),
        (["--set", "nonsense.x=1"], "nonsense"),
        (["--set", "model.latnt_dim=4"], "did you mean 'latent_dim'"),
        (["--lambdas", "0,,1"], "--lambdas"),
        (["--device", "gpu"], "train.device"),
        (["--name", "../up"], "name"),
    ],
)
def test_cli_bad_spec_exits_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, ["sweep", "--dry-run", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    assert fragment in lines[0]
    assert not any(tmp_path.iterdir())
