"""End to end through the command line (Typer's CliRunner): sweep -> files -> report -> status."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import sweeps
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.schema import METRICS_COLUMNS

runner = CliRunner()
QUICK = [
    "--epochs",
    "2",
    "--set",
    "model.hidden=[32]",
    "--latent-dim",
    "4",
    "--device",
    "cpu",
    "--set",
    "eval.iwae_samples=5",
]
SUMMARY_KEYS = {
    "run_id",
    "lambda",
    "anneal",
    "seed",
    "latent_dim",
    "epochs",
    "test_elbo",
    "test_recon",
    "test_kl",
    "active_units",
    "test_iwae_nll",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    result = runner.invoke(
        app, ["sweep", "--lambdas", "0,0.5", "--anneal", "none,linear", "--out", str(out), *QUICK]
    )
    assert result.exit_code == 0, result.output
    return out


def test_sweep_writes_the_documented_layout(swept: Path) -> None:
    sweep = swept / "default"
    assert (sweep / "spec.yaml").is_file()
    runs = sorted((sweep / "runs").iterdir())
    assert len(runs) == 4
    for folder in runs:
        assert re.fullmatch(r"lam(0|0\.5)-(none|linear)-s0-[0-9a-f]{6}", folder.name)
        metrics = pd.read_csv(folder / "metrics.csv")
        assert list(metrics.columns) == list(METRICS_COLUMNS)
        assert metrics["epoch"].tolist() == [1, 2] and (metrics["run_id"] == folder.name).all()
        assert metrics["test_elbo"].lt(0).all()
        summary = json.loads((folder / "summary.json").read_text())
        assert summary.keys() >= SUMMARY_KEYS and summary["run_id"] == folder.name
        assert summary["test_elbo"] == pytest.approx(metrics["test_elbo"].iloc[-1])
        assert summary["test_elbo"] == pytest.approx(-(summary["test_recon"] + summary["test_kl"]))
        kl = pd.read_csv(folder / "kl_per_dim.csv")
        assert (
            list(kl.columns) == ["epoch", "dim", "kl", "kl_spread", "kl_rest"] and len(kl) == 2 * 4
        )
        final = kl[kl.epoch == 2].sort_values("dim")["kl"]
        assert final.sum() == pytest.approx(summary["test_kl"], rel=1e-6)


def test_linear_warmup_shows_in_beta_column(swept: Path) -> None:
    for folder in (swept / "default" / "runs").iterdir():
        beta = pd.read_csv(folder / "metrics.csv")["beta"]
        if "-linear-" in folder.name:
            assert 0 < beta.iloc[-1] < 1  # 2 epochs into a 10-epoch warm-up
        else:
            assert (beta == 1).all()


def test_second_sweep_trains_nothing(swept: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in swept.glob("default/runs/*/*")}
    result = runner.invoke(
        app, ["sweep", "--lambdas", "0,0.5", "--anneal", "none,linear", "--out", str(swept), *QUICK]
    )
    assert result.exit_code == 0, result.output
    assert "0 to train" in result.output and "nothing to train" in result.output
    assert before == {p: p.stat().st_mtime_ns for p in swept.glob("default/runs/*/*")}


def test_report_files_are_valid(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(swept), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("active_units.png", "elbo.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    html = (out / "index.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    for src in re.findall(r'src="([^"]+)"', html):
        assert (out / src).is_file(), src
    assert "index.html" in result.output


def test_status_lists_every_run(swept: Path) -> None:
    result = runner.invoke(app, ["status", str(swept)])
    assert result.exit_code == 0, result.output
    assert result.output.count("done") >= 4 and "4 done" in result.output


def test_dry_run_lists_runs_and_trains_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", "--dry-run", "--seeds", "0,1,2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "15 runs, 15 to train" in result.output
    assert not (tmp_path / "default").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lambdas", "0,-1"], "free_bits.lambda"),
        (["--lambdas", "0,nan"], "free_bits.lambda"),
        (["--epochs", "0"], "train.epochs"),
        (["--set", "model.latnt_dim=3"], "latent_dim"),
        (["--set", "train.lr=fast"], "train.lr"),
        (["--shard", "3/2"], "--shard"),
        (["--name", "../escape"], "name"),
        (["--device", "tpu"], "train.device"),
        (["missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["sweep", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_status_and_report_of_missing_folder_exit_2(tmp_path: Path) -> None:
    for command in ("status", "report"):
        result = runner.invoke(app, [command, str(tmp_path / "nope")])
        assert result.exit_code == 2 and "nope" in result.output
        assert "Traceback" not in result.output


def test_failed_run_gives_exit_code_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from freebits_cli.engine import train as train_module

    real = train_module.free_bits_kl

    def poisoned(kl: torch.Tensor, lam: torch.Tensor, mode: str, groups: int) -> torch.Tensor:
        return real(kl, lam, mode, groups) * torch.where(lam == 3, float("nan"), 1.0)

    monkeypatch.setattr(train_module, "free_bits_kl", poisoned)
    result = runner.invoke(app, ["sweep", "--lambdas", "0,3", "--out", str(tmp_path), *QUICK])
    assert result.exit_code == 1
    assert "failed" in result.output and "diverged at epoch 1" in result.output
    status = runner.invoke(app, ["status", str(tmp_path)])
    assert "1 done" in status.output and "1 failed" in status.output


def test_unparsable_list_flag_and_out_on_a_file_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", "--lambdas", "[1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--lambdas" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["sweep", "--out", str(blocker), *QUICK])
    assert result.exit_code == 2 and str(blocker) in result.output
    assert "Traceback" not in result.output and blocker.read_text() == "not a folder"


def test_huge_numbers_are_exact_or_rejected(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["sweep", "--dry-run", "--seeds", "12345678901234567891", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    from freebits_cli.spec.files import build_spec

    (run,) = build_spec(
        None, [("grid.lambda", [0]), ("grid.seed", [12345678901234567891])]
    ).expand()
    assert run.train.seed == 12345678901234567891 and "-s12345678901234567891-" in run.run_id
    result = runner.invoke(app, ["sweep", "--set", "train.lr=1e999", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "train.lr" in result.output


def test_resume_on_another_device_type_is_refused_before_anything_changes(tmp_path: Path) -> None:
    import torch

    from freebits_cli.results import storage

    def stop(run_ids: object, epoch: int, epochs: int) -> None:
        raise KeyboardInterrupt

    from freebits_cli.spec.files import build_spec

    spec = build_spec(None, [("grid.lambda", [0]), ("model.hidden", [16]), ("train.epochs", 3)])
    with pytest.raises(KeyboardInterrupt):
        sweeps.run(spec, tmp_path, on_epoch=stop)
    checkpoint = next(tmp_path.glob("default/runs/*/checkpoint.pt"))
    state = torch.load(checkpoint, weights_only=True)
    assert state["device_type"] == "cpu"
    state["device_type"] = "cuda"  # as if it had been trained on a GPU box
    storage.save_checkpoint(checkpoint, state)
    before = checkpoint.read_bytes()
    result = runner.invoke(
        app,
        [
            "sweep",
            "--lambdas",
            "0",
            "--set",
            "model.hidden=[16]",
            "--epochs",
            "3",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "checkpointed on cuda" in result.output and "--force" in result.output
    assert checkpoint.read_bytes() == before
