"""The page as a researcher reads it: the spec section shows what differs from the defaults, a
report over several sweeps keeps each sweep's columns to what varies in it, cells stay short, and
run times are each run's share of its pack (hand-written runs: tests/report_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import make_sweep

from freebits_cli.report import build_report
from freebits_cli.report.html import spec_changes
from freebits_cli.spec.config import SweepSpec
from freebits_cli.spec.files import build_spec, dump_spec


def section(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    end = page.find("<h2", start)
    return page[start : end if end > 0 else None]


# ------------------------------------------------------------------ 6. the spec section


def test_spec_lists_only_what_differs_from_the_defaults(tmp_path: Path) -> None:
    overrides = [("train.epochs", 3), ("model.latent_dim", 8), ("grid.lambda", [0, 1])]
    text = dump_spec(build_spec(None, overrides))
    assert "slurm" in text and "partition" in text  # the resolved spec holds every field
    changes = {field: (value, default) for field, value, default in spec_changes(text)}
    assert changes == {
        "grid": ("{lambda: [0, 1]}", "{lambda: [0.0, 0.1, 0.5, 1.0, 2.0]}"),
        "model.latent_dim": ("8", str(SweepSpec().model.latent_dim)),
        "train.epochs": ("3", str(SweepSpec().train.epochs)),
    }
    sweep = tmp_path / "default"
    make_sweep(sweep, [0, 1], ["none"], [0], lambda lam, a, s: {}, samples=False)
    (sweep / "spec.yaml").write_text(text)
    page = build_report(tmp_path).index_html.read_text(encoding="utf-8")
    spec = section(page, "spec")
    shown, folded = spec.split("<details>")
    assert "train.epochs" in shown and "slurm" not in shown and "partition" not in shown
    assert "partition" in folded  # the rest, folded (closed <details>)
    assert "<details open" not in spec


def test_spec_at_its_defaults_says_so(tmp_path: Path) -> None:
    sweep = tmp_path / "default"
    make_sweep(sweep, [0, 1], ["none"], [0], lambda lam, a, s: {}, samples=False)
    (sweep / "spec.yaml").write_text(dump_spec(SweepSpec()))
    page = build_report(tmp_path).index_html.read_text(encoding="utf-8")
    assert "Every field at its default." in section(page, "spec")


# ------------------------------------------------------------------ 7. several sweeps


def two_sweeps(root: Path) -> None:
    """Sweeps that differ in ~a field each (latent size, epochs), each varying λ and one more."""
    make_sweep(
        root / "small", [0, 1], ["none", "linear"], [0, 1], lambda lam, a, s: {},
        latent_dim=4, samples=False,
    )  # fmt: skip
    make_sweep(
        root / "big", [0, 0.5], ["none"], [0, 1], lambda lam, a, s: {"active_units": 8},
        latent_dim=16, samples=False, extra={"model.hidden": [256]},
    )  # fmt: skip


def test_each_sweep_shows_only_the_fields_varying_within_it(tmp_path: Path) -> None:
    two_sweeps(tmp_path)
    page = build_report(tmp_path).index_html.read_text(encoding="utf-8")
    by_setting = section(page, "by-setting")
    tables = {t.split("<")[0]: t for t in by_setting.split("<h3>Sweep ")[1:]}
    assert set(tables) == {"small", "big"}
    for table in tables.values():
        head = table[table.index("<thead>") : table.index("</thead>")]
        assert "model.hidden" not in head and "sweep" not in head  # constant within each sweep
        assert "<th>λ</th>" in head and "<th>schedule</th>" in head
    strategies = section(page, "strategies")
    cells = [c.split("<")[0] for c in strategies.split("<td>")[1:]]
    assert "λ=1 · linear" in cells and not any("model.hidden" in c for c in cells)
    assert max(len(c) for c in cells) < 40  # short cells: no `key = value` strings


# ------------------------------------------------------------------ 9. time per run


def test_each_run_gets_its_share_of_the_packs_time(tmp_path: Path, one_thread: None) -> None:
    import json

    import sweeps

    from freebits_cli import schema

    spec = build_spec(
        None,
        [("model.hidden", [16]), ("model.latent_dim", 2), ("train.epochs", 2),
         ("train.device", "cpu"), ("eval.iwae_samples", 0), ("eval.samples", 0),
         ("dataset.train_size", 200), ("dataset.test_size", 100), ("grid.lambda", [0, 0.5, 1])],
    )  # fmt: skip
    sweeps.train(spec, tmp_path, pack_size=3)
    summaries = [
        json.loads((run / schema.SUMMARY).read_text())
        for run in sorted((tmp_path / spec.name / schema.RUNS_DIR).iterdir())
    ]
    assert len(summaries) == 3
    pack = summaries[0][schema.PACK_SECONDS]
    assert pack > 0 and all(s[schema.PACK_SECONDS] == pack for s in summaries)  # one pack
    assert all(s["seconds"] == pytest.approx(pack / 3) for s in summaries)  # a third each
    page = build_report(tmp_path).index_html.read_text(encoding="utf-8")
    runs = section(page, "runs")
    assert "seconds (run&#x27;s share)" in runs and "seconds (its pack)" in runs
