"""Pretraining and aggressive training on a GPU (`pytest -m cuda`): text packs with a shared
pretraining and per-member aggressive phases train to the end, the same command reproduces every
CSV bit for bit, and packed runs stay close to alone ones (batched kernels round differently)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpu_sweeps import same_files, summaries, train, write_text

pytestmark = pytest.mark.cuda


def overrides(corpus: Path) -> list[tuple[str, object]]:
    return [
        ("dataset.name", "text"),
        ("dataset.data_dir", str(corpus)),
        ("model.hidden", [32]),
        ("model.embedding_dim", 16),
        ("model.latent_dim", 4),
        ("model.dropout", 0.5),
        ("train.epochs", 2),
        ("train.aggressive", True),
        ("train.aggressive_steps", 20),
        ("pretrain.epochs", 1),
        ("eval.iwae_samples", 5),
        ("eval.select", "best_valid"),
        ("grid.lambda", [0, 0.5, 1]),
    ]


def test_pretrained_aggressive_text_packs_reproduce_and_match_alone(tmp_path: Path) -> None:
    corpus = write_text(tmp_path / "corpus")
    first = train(tmp_path / "a", overrides(corpus))
    again = train(tmp_path / "b", overrides(corpus))
    same_files(first, again)
    assert len(list(first.glob("pretrain/*/model.pt"))) == 1
    alone = summaries(train(tmp_path / "c", overrides(corpus), pack_size=1))
    for run_id, packed in summaries(first).items():
        assert packed["test_elbo"] == pytest.approx(alone[run_id]["test_elbo"], rel=1e-3)
