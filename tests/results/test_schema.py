"""The one schema: every column and file a run writes is named there, the identity of a run and
what may change under one sweep name agree, and a sweep runs through `run_sweep` alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import sweeps
import yaml

import freebits_cli as fb
from freebits_cli import schema
from freebits_cli.errors import SpecError
from freebits_cli.results import records, sweep_folder
from freebits_cli.results.reader import read_results
from freebits_cli.results.settings import split_by_config
from freebits_cli.spec.files import build_spec, dump_spec
from freebits_cli.sweep.run import Planned

pytestmark = pytest.mark.usefixtures("one_thread")

TINY: list[tuple[str, Any]] = [
    ("grid.lambda", [0, 1]),
    ("train.epochs", 2),
    ("model.hidden", [16]),
    ("model.latent_dim", 2),
    ("train.device", "cpu"),
    ("train.batch_size", 128),
    ("eval.iwae_samples", 2),
    ("eval.samples", 2),
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, one_thread_module: None) -> Path:
    """A two-run sweep trained through the Python API's run_sweep alone (no CLI): its results
    folder."""
    out = tmp_path_factory.mktemp("swept")
    seen: list[Planned] = []
    epochs: list[int] = []
    hooks = fb.Hooks(planned=seen.append)
    result = fb.run_sweep(fb.build_spec(None, TINY), out, fb.SweepOptions(), hooks)
    assert result.exit_code == 0 and result.trained == 2 and not result.failed
    (planned,) = seen
    assert len(planned.plan.todo) == 2 and sum(len(p) for p in planned.packs) == 2
    assert [r.state for r in result.plan.runs] == ["done", "done"]
    again = sweeps.run(build_spec(None, TINY), out, on_epoch=lambda *a: epochs.append(a[1]))
    assert again.trained == 0 and epochs == []  # complete runs are not trained again
    return out


def header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return next(csv.reader(f))


def test_every_file_and_column_a_run_writes_is_in_the_schema(swept: Path) -> None:
    folders = sorted((swept / "default" / schema.RUNS_DIR).iterdir())
    assert len(folders) == 2
    known_files = {
        schema.CONFIG,
        schema.METRICS_CSV,
        schema.KL_PER_DIM,
        schema.SUMMARY,
        schema.SAMPLES,
        schema.MODEL_FILE,
        ".lock",
    }
    for folder in folders:
        assert {p.name for p in folder.iterdir()} <= known_files
        assert header(folder / schema.METRICS_CSV) == list(schema.METRICS_COLUMNS)
        assert header(folder / schema.KL_PER_DIM) == list(schema.KL_COLUMNS)
        summary = json.loads((folder / schema.SUMMARY).read_text())
        assert set(summary) <= set(schema.SUMMARY_KEYS)
        assert set(schema.FINAL_METRICS) <= set(summary)
    table = read_results(swept).table
    plain = [c for c in table.columns if "." not in c]  # dotted: swept fields, by path
    assert set(plain) <= set(schema.RUN_TABLE_COLUMNS), set(plain) - set(schema.RUN_TABLE_COLUMNS)


def test_a_summary_key_the_schema_does_not_name_is_refused(swept: Path, tmp_path: Path) -> None:
    run = build_spec(None, TINY).expand()[0]
    folder = tmp_path / "runs" / run.run_id
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match="not in the schema: \\['test_new_metric'\\]"):
        records.write_summary(folder, run, {}, [], {"test_new_metric": 1.0})
    assert not (folder / schema.SUMMARY).exists()


def test_the_schema_names_each_column_once() -> None:
    for names in (schema.METRICS_COLUMNS, schema.SUMMARY_KEYS, schema.RUN_TABLE_COLUMNS):
        assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert set(schema.SPARSE_METRICS) <= set(schema.FINAL_METRICS)
    assert set(schema.REPORT_METRICS) <= set(schema.RUN_TABLE_COLUMNS)


def saved(folder: Path, *overrides: tuple[str, Any]) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / schema.SPEC_FILE).write_text(dump_spec(build_spec(None, list(overrides))))
    return yaml.safe_load((folder / schema.SPEC_FILE).read_text())


def test_a_text_corpus_is_part_of_the_run_and_of_the_sweep(tmp_path: Path) -> None:
    """Where a folder is the data (text), another folder is another experiment: another run id,
    refused under the same sweep name, and two settings in the report, never pooled as seeds."""
    text = [("dataset.name", "text"), ("grid.lambda", [0, 1])]
    one = [("dataset.data_dir", str(tmp_path / "one")), *text]
    two = [("dataset.data_dir", str(tmp_path / "other")), *text]
    ids_one = {r.run_id for r in build_spec(None, one).expand()}
    assert ids_one.isdisjoint(r.run_id for r in build_spec(None, two).expand())
    folder = tmp_path / "sweep"
    saved(folder, *one)
    with pytest.raises(SpecError, match=r"dataset\.data_dir"):
        sweep_folder.check_unchanged(folder, build_spec(None, two))
    # Images: the folder only says where the same files live.
    images = [("dataset.name", "mnist"), ("grid.lambda", [0, 1])]
    saved(tmp_path / "images", ("dataset.data_dir", "/a"), *images)
    sweep_folder.check_unchanged(
        tmp_path / "images", build_spec(None, [("dataset.data_dir", "/b"), *images])
    )
    a = {"dataset.name": "mnist", "dataset.data_dir": "/a", "train.seed": 0}
    b = {"dataset.name": "mnist", "dataset.data_dir": "/b", "train.seed": 1}
    rows = [{"path": "a", "sweep": "s"}, {"path": "b", "sweep": "s"}]
    assert split_by_config(rows, {"a": a, "b": b}, []) == []  # seeds of one setting
    c = {**a, "dataset.name": "text"}
    d = {**b, "dataset.name": "text"}
    warnings: list[str] = []
    assert split_by_config(rows, {"a": c, "b": d}, warnings) == ["dataset.data_dir"]
    assert warnings and "kept apart" in warnings[0]
