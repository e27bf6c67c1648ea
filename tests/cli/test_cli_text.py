"""What the command line prints is the text it means: brackets in titles, paths, names and
failure reasons are shown as written, never read as Rich markup and dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from report_fixtures import make_sweep
from typer.testing import CliRunner

from freebits_cli import schema
from freebits_cli.cli import app
from freebits_cli.cli.app import fail, warn
from freebits_cli.spec.files import build_spec, dump_spec
from freebits_cli.sweep import executor

runner = CliRunner()


def _numbers(lam: float, anneal: str, seed: int) -> dict[str, float]:
    return {"elbo": -100.0 + lam + seed, "kl": 5.0 + lam, "active_units": 4 - lam}


def test_report_title_keeps_its_low_high_bracket(tmp_path: Path) -> None:
    make_sweep(tmp_path / "demo", [0, 1], ["none"], [0, 1], _numbers)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "[low, high]: clipped to the range" in " ".join(result.output.split())


def test_status_keeps_brackets_in_paths_and_reasons(tmp_path: Path) -> None:
    root = tmp_path / "res[ults]"
    spec = build_spec(None, [("grid.lambda", [1]), ("name", "demo")])
    (root / "demo").mkdir(parents=True)
    (root / "demo" / schema.SPEC_FILE).write_text(dump_spec(spec))
    folder = executor.plan(spec, root).runs[0].folder
    folder.mkdir(parents=True)
    (folder / schema.FAILED).write_text(json.dumps({"reason": "loss is NaN at [step 40]"}))
    result = runner.invoke(app, ["status", str(root)])
    assert result.exit_code == 0, result.output
    assert f"runs under {root}" in result.output.replace("\n", "")
    assert "[step 40]" in result.output


def test_errors_and_warnings_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    warn("kept [bold]as written[/bold]")
    with pytest.raises(typer.Exit):
        fail("model.hidden: got [a, b]", 2)
    err = capsys.readouterr().err
    assert "warning: kept [bold]as written[/bold]" in err
    assert "error: model.hidden: got [a, b]" in err


def test_dry_run_sweep_line_keeps_a_bracketed_out_folder(tmp_path: Path) -> None:
    out = tmp_path / "out[a]"
    result = runner.invoke(app, ["sweep", "--dry-run", "--no-pilot", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out / "default") in result.output.replace("\n", "")
