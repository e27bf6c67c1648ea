"""eval.select: best_valid — each run keeps its parameters at its best validation ELBO and is scored
there on the test set, beside its last epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_text import rows, train
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.data import load_dataset
from freebits_cli.spec.files import build_spec

runner = CliRunner()


def test_best_valid_selection_reports_the_best_epochs_test_numbers(tmp_path: Path) -> None:
    spec = build_spec(
        None,
        [
            ("model.hidden", [64]),
            ("model.latent_dim", 4),
            ("train.epochs", 6),
            ("train.batch_size", 16),
            ("train.lr", 0.01),
            ("train.device", "cpu"),
            ("dataset.valid_size", 300),
            ("dataset.train_size", 100),  # overfits: validation peaks before the last epoch
            ("eval.select", "best_valid"),
            ("eval.iwae_samples", 0),
            ("eval.samples", 0),
            ("grid.lambda", [0, 1]),
            ("grid.seed", [0, 1]),
        ],
    )
    train(spec, tmp_path)
    found = rows(tmp_path)
    best_epochs = []
    for folder in (tmp_path / "default" / "runs").iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        history = found[folder.name]
        valid = [float(r["valid_elbo"]) for r in history]
        best = summary["best_valid"]
        best_epochs.append(best["epoch"])
        assert best["epoch"] == 1 + int(np.argmax(valid)) and best["valid_elbo"] == max(valid)
        row = history[best["epoch"] - 1]  # the same parameters and streams: the same numbers
        assert best["test_elbo"] == float(row["test_elbo"])
        assert best["active_units"] == int(row["active_units"])
        assert summary["test_elbo"] == float(history[-1]["test_elbo"])
    data = load_dataset(spec.expand()[0].dataset)
    assert len(data.x_train) == 100 and len(data.x_valid) == 300
    assert min(best_epochs) < 6  # a selection, not the last epoch by default


def test_best_valid_needs_a_validation_set() -> None:
    result = runner.invoke(app, ["sweep", "--set", "eval.select=best_valid", "--dry-run"])
    assert result.exit_code == 2 and "dataset.valid_size" in result.output, result.output
