"""Spec mistakes as a researcher makes them: every field at fault at once (one line each, exit 2),
hints for the YAML list and the misplaced sweep, `--set` of a bare field name, and notes for
what the command line drops or overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.errors import SpecError, SpecErrors
from freebits_cli.spec import parse_spec
from freebits_cli.spec.files import build_spec

runner = CliRunner()


def sweep(tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", *args, "--dry-run", "--no-pilot", "--out", str(out)])
    return result.exit_code, result.output.strip().splitlines()


def spec_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return str(path)


def test_every_field_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = "model: {latent_dim: 0, hidden: [-3]}\ntrain: {lr: fast, epochs: 0}\nsurprise: 1\n"
    code, lines = sweep(tmp_path, spec_file(tmp_path, text), "--lambdas", "0,-1")
    assert code == 2, lines
    fields = [line.split(":")[1].strip() for line in lines]
    assert all(line.startswith("error: ") for line in lines), lines
    assert sorted(fields) == sorted(
        [
            "surprise",
            "model.latent_dim",
            "model.hidden",
            "train.lr",
            "train.epochs",
            "free_bits.lambda",
        ]
    )


def test_one_line_per_field_however_many_grid_values_are_wrong(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, "--lambdas", "0,-1,-2", "--set", "train.epochs=0")
    assert code == 2
    assert len(lines) == 2 and sum("free_bits.lambda" in line for line in lines) == 1, lines


def test_several_bad_overrides_are_all_named(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, "--set", "lr=1", "--set", "model.latnt_dim=3", "--epochs", "0")
    assert code == 2
    assert [line.split(":")[1].strip() for line in lines] == [
        "--set lr",
        "--set model.latnt_dim",
        "train.epochs",
    ], lines


def test_the_library_raises_all_errors_as_one_spec_error() -> None:
    with pytest.raises(SpecErrors) as caught:
        parse_spec({"model": {"latent_dim": 0}, "train": {"epochs": 0}})
    assert isinstance(caught.value, SpecError) and caught.value.exit_code == 2
    assert [e.field for e in caught.value.errors] == ["model.latent_dim", "train.epochs"]
    assert "model.latent_dim" in str(caught.value) and "train.epochs" in str(caught.value)
    with pytest.raises(SpecError) as one:  # a single mistake is the plain error, as before
        parse_spec({"train": {"epochs": 0}})
    assert type(one.value) is SpecError


def test_a_comma_string_hints_the_yaml_list(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, spec_file(tmp_path, "grid:\n  lambda: 0, 0.5, 1\n"))
    assert code == 2 and len(lines) == 1
    assert "'0, 0.5, 1'" in lines[0] and "[0, 0.5, 1]" in lines[0], lines


def test_a_flow_mapping_without_brackets_hints_the_list(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, spec_file(tmp_path, "grid: {lambda: 0, 0.5, 1}\n"))
    assert code == 2
    assert "grid.0.5" in lines[0] and "grid: {lambda: [0, 0.5, 1]}" in lines[0], lines


def test_a_list_in_a_section_says_sweeps_go_under_grid(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, spec_file(tmp_path, "free_bits: {lambda: [0, 0.5, 1]}\n"))
    assert code == 2 and len(lines) == 1
    assert "free_bits.lambda" in lines[0] and "grid:" in lines[0]
    assert "[0, 0.5, 1]" in lines[0], lines
    # and the hinted spelling is a valid spec
    assert len(build_spec(None, [("grid.free_bits.lambda", [0, 0.5, 1])]).expand()) == 3


@pytest.mark.parametrize(
    ("given", "meant"),
    [("lr", "train.lr"), ("hidden", "model.hidden"), ("latnt_dim", "model.latent_dim")],
)
def test_set_of_a_bare_field_suggests_its_section(tmp_path: Path, given: str, meant: str) -> None:
    code, lines = sweep(tmp_path, "--set", f"{given}=3")
    assert code == 2 and len(lines) == 1
    assert f"--set {given}: unknown field (did you mean '{meant}'?)" in lines[0], lines


def test_duplicate_list_values_are_dropped_with_a_note(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, "--lambdas", "0,0,1")
    assert code == 0, lines
    assert "--lambdas: duplicate value 0 dropped; each value is trained once" in lines
    assert any("2 runs" in line for line in lines)
    code, lines = sweep(tmp_path, "--lambdas", "0,1")
    assert code == 0 and not any(line.startswith("--lambdas") for line in lines), lines


def test_two_flags_on_one_field_say_which_wins(tmp_path: Path) -> None:
    code, lines = sweep(tmp_path, "--lambdas", "0,1", "--set", "free_bits.lambda=1")
    assert code == 0, lines
    said = [line for line in lines if "overrides" in line]
    assert said == [
        "--set free_bits.lambda=1 overrides --lambdas 0,1 (both set free_bits.lambda; "
        "--set applies last)"
    ]
    assert any("1 runs" in line for line in lines)
    code, lines = sweep(tmp_path, "--epochs", "3", "--set", "train.epochs=5")
    assert [line for line in lines if "overrides" in line] == [
        "--set train.epochs=5 overrides --epochs 3 (both set train.epochs; --set applies last)"
    ]
