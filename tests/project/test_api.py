"""The Python API: `import freebits_cli as fb` (or `import freebits`) and three tables, read by the
same reader as the report (its summary.csv is load_runs' table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_sweep, write_run

import freebits_cli as fb
from freebits_cli.errors import ResultsError
from freebits_cli.report import build_report


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_sweep(
        root / "demo",
        [0, 1],
        ["none", "linear"],
        [0, 1],
        lambda lam, a, s: {"elbo": -100 - lam - s, "kl": 4 + lam, "active_units": 2 + 2 * lam},
        epochs=3,
    )
    write_run(root / "demo", 2, "none", 0, state="failed", epochs=3)
    return root


def test_load_runs_is_the_reports_summary(results: Path) -> None:
    runs = fb.load_runs(results)
    assert len(runs) == 9
    setting = ["lambda", "free_bits_mode", "anneal", "seed"]
    assert list(runs.columns[:7]) == ["sweep", "run_id", "state", *setting]
    assert runs["state"].value_counts().to_dict() == {"done": 8, "failed": 1}
    one = runs[(runs["lambda"] == 1) & (runs["anneal"] == "linear") & (runs["seed"] == 1)].iloc[0]
    assert (one["test_elbo"], one["test_kl"], one["active_units"]) == (-102, 5, 4)
    report = build_report(results, results / "report")
    summary = pd.read_csv(report.out_dir / "summary.csv")
    assert list(summary["run_id"]) == list(runs["run_id"])
    pd.testing.assert_series_equal(summary["test_elbo"], runs["test_elbo"])
    # The report's folder below the results is never read as runs.
    assert len(fb.load_runs(results)) == 9


def test_load_curves_one_row_per_run_and_epoch(results: Path) -> None:
    curves = fb.load_curves(results)
    assert len(curves) == 8 * 3 + 2  # the failed run stopped after 2 epochs
    assert {"sweep", "run_id", "state", "lambda", "anneal", "seed", "epoch", "test_elbo"} <= set(
        curves.columns
    )
    run = curves[curves["run_id"] == "lam1-linear-s1"]
    assert list(run["epoch"]) == [1, 2, 3]
    assert list(run["test_elbo"]) == [-104, -103, -102]  # 1 nat per epoch below the final
    assert (run["state"] == "done").all() and (run["lambda"] == 1).all()


def test_load_kl_one_row_per_unit(results: Path) -> None:
    kl = fb.load_kl(results)
    assert list(kl.columns[-3:]) == ["epoch", "dim", "kl"]
    run = kl[kl["run_id"] == "lam0-none-s0"]
    assert len(run) == 3 * 4  # epochs × latent units
    final = run[run["epoch"] == 3].sort_values("dim")["kl"].tolist()
    assert final == pytest.approx([2.0, 2.0, 1e-5 / 3, 1e-5 / 3])


def test_one_run_folder_and_errors(results: Path, tmp_path: Path) -> None:
    one = fb.load_runs(results / "demo" / "runs" / "lam0-none-s0")
    assert list(one["run_id"]) == ["lam0-none-s0"]
    with pytest.raises(ResultsError, match="no such folder"):
        fb.load_runs(tmp_path / "nowhere")
    with pytest.raises(ResultsError, match="no runs found"):
        fb.load_curves(tmp_path)


def test_damaged_files_warn_and_the_rest_is_read(tmp_path: Path) -> None:
    run = write_run(tmp_path / "s", 0, "none", 0)
    (run / "summary.json").write_text('{"torn')
    with pytest.warns(UserWarning, match="summary.json is corrupt"):
        runs = fb.load_runs(tmp_path)
    assert runs["state"].tolist() == ["incomplete"]


def test_import_is_light_and_the_freebits_alias() -> None:
    code = "import sys, freebits_cli, freebits; m = sys.modules; "
    code += "print(any(k in m for k in ('torch', 'matplotlib', 'pandas')), freebits.load_kl is "
    code += "freebits_cli.load_kl, freebits.__version__ == freebits_cli.__version__)"
    root = Path(__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["False", "True", "True"]
    with pytest.raises(AttributeError, match="load_everything"):
        fb.load_everything  # noqa: B018
