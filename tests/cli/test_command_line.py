"""The command line itself: help, parser errors as one line, closed pipes, the status columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.cli.app import EXIT_BROKEN_PIPE, guarded
from freebits_cli.spec.files import build_spec, dump_spec

runner = CliRunner()
ROOT = Path(__file__).parents[2]


def _one_error_line(result: object) -> str:
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, result.output  # type: ignore[attr-defined]
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--lambdas", "0,", "0.5,", "1"], "write --lambdas 0,0.5,1 (no spaces)"),
        (["--lambdas", "0", "0.5"], "write --lambdas 0,0.5 (no spaces)"),
        (["--seeds", "0", ",1"], "write --seeds 0,1 (no spaces)"),
        (["--anneal", "none", "linear"], "write --anneal none,linear (no spaces)"),
    ],
)
def test_a_list_with_spaces_is_one_line_with_a_hint(
    tmp_path: Path, args: list[str], hint: str
) -> None:
    result = runner.invoke(app, ["sweep", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert _one_error_line(result).endswith(hint)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sweep", "--lamdas", "0,1"], "--lamdas"),
        (["sweep", "--epochs", "many"], "--epochs"),
        (["sweep", "a.yaml", "b.yaml"], "unexpected extra argument"),
        (["status"], "RESULTS_DIR"),
        (["nonsense"], "nonsense"),
    ],
)
def test_parser_errors_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle.lower() in _one_error_line(result).lower()


@pytest.mark.parametrize("spec", ["missing.yaml", "my_spec"])
def test_a_spec_file_after_a_list_gets_no_hint(spec: str) -> None:
    result = runner.invoke(app, ["sweep", "--lambdas", "0,1", spec])
    assert result.exit_code == 2 and "no spaces" not in _one_error_line(result)


def test_help_shows_flags_without_a_value_and_takes_h() -> None:
    result = runner.invoke(app, ["sweep", "-h"])
    assert result.exit_code == 0, result.output

    def line(flag: str) -> str:
        return next(x for x in result.output.splitlines() if f"{flag} " in x)

    for flag in ("--dry-run", "--force", "--no-wait", "--json", "--yes"):
        assert "<bool>" not in line(flag) and "BOOLEAN" not in line(flag), line(flag)
    assert "<int" in line("--epochs")  # options that take a value still say which
    dataset = result.output[result.output.index("--dataset") : result.output.index("  --data-dir")]
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "text", "FILE.npz"):
        assert name in dataset
    for command in ("status", "report"):
        assert runner.invoke(app, [command, "-h"]).exit_code == 0


def test_a_closed_pipe_stops_quietly() -> None:
    def write_to_a_closed_pipe() -> int:
        raise BrokenPipeError

    with pytest.raises(BaseException) as stop:
        guarded(write_to_a_closed_pipe)
    assert getattr(stop.value, "exit_code", None) == EXIT_BROKEN_PIPE


def test_status_json_into_a_closed_pipe_prints_nothing_on_stderr(tmp_path: Path) -> None:
    spec = build_spec(None, [("grid.seed", list(range(20)))])
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "spec.yaml").write_text(dump_spec(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "freebits_cli", "status", str(tmp_path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head -0`: the reader is gone before the first row
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE, err
    assert err == ""


def test_status_shows_the_free_bits_mode(tmp_path: Path) -> None:
    spec = build_spec(None, [("grid.lambda", [0, 1]), ("grid.mode", ["batch", "example"])])
    (tmp_path / "modes").mkdir()
    (tmp_path / "modes" / "spec.yaml").write_text(dump_spec(spec))
    result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "run id" in line)
    assert "mode" in header.split()
    rows = [
        json.loads(line)
        for line in runner.invoke(app, ["status", str(tmp_path), "--json"]).output.splitlines()
    ]
    for row in rows:
        line = next(x for x in result.output.splitlines() if row["run_id"] in x)
        assert f" {row['mode']} " in line
