"""Damaged files, changed specs and early stops: one warning or one error line, never a crash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import sweeps
import torch
import yaml
from report_fixtures import write_run
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.report import build_report
from freebits_cli.results import storage

runner = CliRunner()
QUICK = ["--epochs", "3", "--set", "model.hidden=[16]", "--latent-dim", "3", "--device", "cpu"]
QUICK += ["--set", "eval.iwae_samples=4", "--set", "eval.samples=2"]
QUICK += ["--set", "train.batch_size=256"]


pytestmark = pytest.mark.usefixtures("one_thread")


def sweep(out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["sweep", "--lambdas", "0,1", "--out", str(out), *QUICK, *extra])


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, one_thread_module: None) -> Path:
    out = tmp_path_factory.mktemp("done")
    result = sweep(out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, one_thread_module: None) -> Path:
    """Both runs stopped after epoch 2 of 3, as a kill would leave them."""
    out = tmp_path_factory.mktemp("interrupted")
    from freebits_cli.spec.files import build_spec

    spec = build_spec(
        None,
        [
            ("grid.lambda", [0, 1]),
            ("train.epochs", 3),
            ("model.hidden", [16]),
            ("model.latent_dim", 3),
            ("train.device", "cpu"),
            ("eval.iwae_samples", 4),
            ("eval.samples", 2),
            ("train.batch_size", 256),
        ],
    )

    def stop(run_ids: Any, epoch: int, epochs: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweeps.run(spec, out, on_epoch=stop)
    return out


def numbers(out: Path) -> dict[str, Any]:
    found = {}
    for folder in sorted((out / "default" / "runs").iterdir()):
        summary = storage.read_summary(folder) or {}
        found[folder.name] = {k: summary.get(k) for k in ("test_elbo", "test_kl", "kl_per_dim")}
        found[folder.name]["epochs"] = storage.csv_epochs(folder / "metrics.csv")
    return found


@pytest.mark.parametrize("damage", ["garbage", "empty", "metrics.csv gone"])
def test_damaged_resume_files_warn_and_restart_from_scratch(
    done: Path, interrupted: Path, tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "r"
    shutil.copytree(interrupted, out)
    folder = sorted((out / "default" / "runs").iterdir())[0]
    if damage == "metrics.csv gone":
        (folder / "metrics.csv").unlink()
        named = folder / "metrics.csv"
    else:
        named = folder / "checkpoint.pt"
        named.write_bytes(b"\x00not a checkpoint" if damage == "garbage" else b"")
    result = sweep(out)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and str(named) in result.output.replace("\n", "")
    assert "restarts from scratch" in result.output or "damaged checkpoint" in result.output
    assert "2 run(s) here" in result.output  # its pack mate restarted with it
    assert numbers(out) == numbers(done)  # retrained from scratch: all epochs, same numbers


def _status(path: Path) -> Any:
    return runner.invoke(app, ["status", str(path)])


@pytest.mark.parametrize(
    ("name", "content", "counts"),
    [
        ("summary.json", "[1, 2]", "1 done, 1 interrupted"),
        ("summary.json", b"\xff\xfe\x00garbage", "1 done, 1 interrupted"),
        ("metrics.csv", b"\x89PNG\r\n\x1a\n\x00\xff", "2 done"),
    ],
)
def test_status_and_report_survive_damaged_files(
    done: Path, tmp_path: Path, name: str, content: Any, counts: str
) -> None:
    out = tmp_path / "r"
    shutil.copytree(done, out)
    folder = sorted((out / "default" / "runs").iterdir())[0]
    data = content.encode() if isinstance(content, str) else content
    (folder / name).write_bytes(data)
    result = _status(out)
    assert result.exit_code == 0, result.output
    assert counts in result.output
    if name == "summary.json":
        assert "damaged" in result.output
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "warning:" in report.output and folder.name in report.output
    if name == "summary.json":  # the run ended and its result is lost: not "running"
        assert "+1 damaged" in report.output and "running" not in report.output


def test_status_reads_a_summary_with_text_for_numbers(done: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    shutil.copytree(done, out)
    folder = sorted((out / "default" / "runs").iterdir())[0]
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps(summary | {"lambda": "x", "test_elbo": "y"}))
    result = _status(out)
    assert result.exit_code == 0 and "2 done" in result.output, result.output
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output


def test_one_broken_spec_does_not_hide_the_other_sweeps(done: Path, tmp_path: Path) -> None:
    shutil.copytree(done / "default", tmp_path / "good")
    shutil.copytree(done / "default", tmp_path / "bad")
    (tmp_path / "good" / "spec.yaml").write_text(
        (done / "default" / "spec.yaml").read_text().replace("name: default", "name: good")
    )
    (tmp_path / "bad" / "spec.yaml").write_text("grid: [unclosed\n")
    result = _status(tmp_path)
    assert result.exit_code == 0, result.output
    assert "bad" in result.output and "not listed" in result.output
    assert "2 done" in result.output


def test_a_changed_spec_under_the_same_name_is_refused(done: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    shutil.copytree(done, out)
    before = (out / "default" / "spec.yaml").read_text()
    for extra, field in ((["--epochs", "4"], "train.epochs"), (["--set", "train.lr=0.01"], "lr")):
        result = sweep(out, *extra)
        assert result.exit_code == 2, result.output
        assert field in result.output and "--name" in result.output and "--force" in result.output
    assert (out / "default" / "spec.yaml").read_text() == before
    # Where things run does not change the numbers; more λ values grow the sweep.
    grown = runner.invoke(
        app, ["sweep", "--lambdas", "2", "--out", str(out), *QUICK, "--data-dir", str(tmp_path)]
    )
    assert grown.exit_code == 0, grown.output
    saved = yaml.safe_load((out / "default" / "spec.yaml").read_text())
    assert sorted(saved["grid"]["lambda"]) == [0, 1, 2]
    assert len(list((out / "default" / "runs").glob("*/summary.json"))) == 3
    # --force replaces the sweep: the old runs go.
    replaced = sweep(out, "--epochs", "1", "--force")
    assert replaced.exit_code == 0, replaced.output
    epochs = {json.loads(p.read_text())["epochs"] for p in out.glob("default/runs/*/summary.json")}
    assert epochs == {1} and len(list(out.glob("default/runs/*"))) == 2


def test_report_never_pools_runs_of_different_specs(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    first = write_run(sweep_dir, 0.5, epochs=3, elbo=-100.0)
    first.rename(first.with_name(first.name + "-old"))
    write_run(sweep_dir, 0.5, epochs=6, elbo=-90.0)
    result = build_report(tmp_path)
    by = result.by_setting
    assert len(by) == 2 and list(by["n"]) == [1, 1]
    assert sorted(by["train.epochs"]) == [3, 6]
    assert any("different specs" in w and "train.epochs" in w for w in result.warnings)
    html = (result.out_dir / "index.html").read_text()
    assert "train.epochs" in html


def test_max_failures_stops_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from freebits_cli.engine import train as train_module

    real = train_module.free_bits_kl

    def poisoned(kl: torch.Tensor, lam: torch.Tensor, mode: str, groups: int) -> torch.Tensor:
        return real(kl, lam, mode, groups) * torch.where(lam >= 7, float("inf"), 1.0)

    monkeypatch.setattr(train_module, "free_bits_kl", poisoned)
    args = ["sweep", "--lambdas", "0,7,8", "--pack-size", "1", "--out", str(tmp_path), *QUICK]
    result = runner.invoke(app, [*args, "--max-failures", "1"])
    assert result.exit_code == 1, result.output
    assert "--max-failures 1" in result.output
    states = {p.name.split("-")[0]: storage.run_state(p) for p in tmp_path.glob("default/runs/*")}
    assert states.get("lam0") == "done" and states.get("lam7") == "failed"
    assert states.get("lam8", "pending") == "pending"  # never started
    status = _status(tmp_path)
    assert status.exit_code == 0 and "1 pending" in status.output


def test_report_interrupted_keeps_the_previous_report(
    done: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    shutil.copytree(done, out)
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "report").iterdir()}
    from freebits_cli.report import html

    def ctrl_c(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("freebits_cli.report.build.write_index", ctrl_c)
    assert html.write_index is not ctrl_c
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 130
    assert "previous one is left as it was" in result.output and "epochs" not in result.output
    assert {p.name: p.read_bytes() for p in (out / "report").iterdir()} == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_empty_spec_and_huge_lambda_name_the_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    result = runner.invoke(app, ["sweep", str(empty), "--out", str(tmp_path)])
    assert result.exit_code == 2 and str(empty) in result.output and "empty" in result.output
    result = runner.invoke(app, ["sweep", "--lambdas", "1e6", "--out", str(tmp_path), *QUICK])
    assert result.exit_code == 2 and "free_bits.lambda" in result.output, result.output
    assert not (tmp_path / "default").exists()


def test_a_full_disk_names_the_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "run" / "checkpoint.next.pt"
    with pytest.raises(OSError) as info:
        storage.save_checkpoint(target, {"epoch": 1})
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as info:
        storage.append_rows(tmp_path / "run" / "metrics.csv", ("epoch",), [{"epoch": 1}])
    assert info.value.filename == str(tmp_path / "run" / "metrics.csv")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.csv"]  # no temporary
    result = runner.invoke(app, ["sweep", "--lambdas", "0", "--out", str(tmp_path), *QUICK])
    assert result.exit_code == 2, result.output
    assert "spec.yaml: cannot write (No space left on device)" in result.output
    assert not list(tmp_path.rglob("summary.json"))


def test_a_full_disk_while_training_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(path: Path, state: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(storage, "save_checkpoint", full)
    result = runner.invoke(app, ["sweep", "--lambdas", "0,1", "--out", str(tmp_path), *QUICK])
    assert result.exit_code == 2, result.output
    assert "checkpoint.next.pt: cannot write (No space left on device)" in result.output
    assert not list(tmp_path.rglob("summary.json"))
    from freebits_cli.results import locks

    assert all(locks.holder(p) is None for p in tmp_path.glob("default/runs/*"))
