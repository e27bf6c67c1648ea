"""Statistics that stay within the possible, and numbers labelled for what they are.

Intervals of bounded quantities (active units in [0, D], MI ≥ 0) are clipped to their range; an MI
estimate below zero is shown as estimator noise, never as a value; a Bernoulli decoder on grayscale
targets has its ELBO/IWAE numbers marked as a summed cross-entropy wherever they are shown.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
from report_fixtures import write_run
from rich.console import Console
from scipy import stats

from freebits_cli.cli.tables import results_table
from freebits_cli.report import build_report, by_setting_rows, seed_stats, t975
from freebits_cli.report.html import table_notes
from freebits_cli.report.stats import by_setting_table
from freebits_cli.results.reader import find_run_dirs, read_runs


def test_t_quantiles_are_scipys() -> None:
    for dof in (1, 2, 5, 30, 40, 1000):
        assert t975(dof) == stats.t.ppf(0.975, dof)


def test_seed_stats_clip_the_interval_to_the_range() -> None:
    s = seed_stats([0, 0, 2], 0.0, 4.0)  # mean 2/3, s = 1.1547, t(2) = 4.3027: ±2.868
    assert s.mean == pytest.approx(2 / 3)
    assert s.ci95 == pytest.approx(4.302653 * 1.154701 / math.sqrt(3), abs=1e-5)
    assert s.lo == 0.0 and s.hi == pytest.approx(2 / 3 + s.ci95)
    s = seed_stats([4, 4, 3], 0.0, 4.0)
    assert s.hi == 4.0 and s.lo == pytest.approx(11 / 3 - s.ci95)
    s = seed_stats([-100.0, -102.0])  # unbounded: the plain t-interval
    assert (s.lo, s.hi) == (pytest.approx(-101 - s.ci95), pytest.approx(-101 + s.ci95))


def bounded_sweep(root: Path) -> None:
    """λ = 0: 0, 0, 2 of 4 units active and MI −0.101, −0.05, 0.02 (noise around zero);
    λ = 1: 4, 4, 3 units active, MI 1.2, 1.3, 1.25."""
    sweep = root / "s"
    for seed, au, mi in ((0, 0, -0.101), (1, 0, -0.05), (2, 2, 0.02)):
        write_run(sweep, 0.0, "none", seed, active_units=au, mi=mi, samples=False)
    for seed, au, mi in ((0, 4, 1.2), (1, 4, 1.3), (2, 3, 1.25)):
        write_run(sweep, 1.0, "none", seed, active_units=au, mi=mi, samples=False)


def test_bounded_intervals_and_negative_mi_in_the_tables(tmp_path: Path) -> None:
    bounded_sweep(tmp_path)
    runs, _ = read_runs(tmp_path, find_run_dirs(tmp_path))
    bs = by_setting_table(runs)
    low, high = bs.iloc[0], bs.iloc[1]
    assert low["active_units_lo"] == 0.0 and low["active_units_mean"] - low["active_units_ci95"] < 0
    assert (
        high["active_units_hi"] == 4.0 and high["active_units_mean"] + high["active_units_ci95"] > 4
    )
    assert low["test_mi_lo"] == 0.0 and low["test_mi_mean"] < 0
    headers, rows = by_setting_rows(bs)
    au, mi = headers.index("AU (cov.)"), headers.index("MI (nats)")
    assert rows[0][au] == "0.7 [0.0, 3.5]" and rows[1][au] == "3.7 [2.2, 4.0]"
    assert rows[0][mi] == "≈ 0 ‡"  # never -0.04, a value a reader might cite
    assert rows[1][mi] == "1.25 [1.13, 1.37]"
    notes = "\n".join(table_notes(bs))
    assert "‡" in notes and "noise" in notes


def test_report_page_and_figures_stay_in_range(tmp_path: Path) -> None:
    bounded_sweep(tmp_path)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        result = build_report(tmp_path, formats="svg")
    page = result.index_html.read_text(encoding="utf-8")
    assert "-0.101" not in page and "-0.05" not in page and "−0.101" not in page
    assert "≈ 0 ‡" in page and "estimator" in page
    assert "clipped" in page  # the page says how the intervals are drawn
    assert "0.7 ± 2.9" not in page and "0.7 [0.0, 3.5]" in page
    caption = page.split('id="active_units"')[1].split("</figcaption>")[0]
    assert "clipped" in caption


def test_grayscale_bernoulli_numbers_say_cross_entropy(tmp_path: Path) -> None:
    write_run(tmp_path / "gray", 0.0, "none", 0, iwae=98.0, samples=False)  # binarize: none
    write_run(tmp_path / "gray", 0.0, "none", 1, iwae=99.0, samples=False)
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        result = build_report(tmp_path, formats="svg")
    headers, _ = by_setting_rows(result.by_setting)
    assert "ELBO (nats) †" in headers and "IWAE NLL (k = 10, nats) †" in headers
    assert "KL (nats)" in headers  # the KL is a KL whatever the decoder
    page = result.index_html.read_text(encoding="utf-8")
    assert "summed cross-entropy, not a likelihood" in page
    for figure in ("elbo", "pareto", "curves", "rate_distortion"):
        svg = (result.out_dir / f"{figure}.svg").read_text(encoding="utf-8")
        assert "cross-entropy" in svg, figure


def test_binarized_runs_are_likelihoods_and_mixed_tables_mark_rows(tmp_path: Path) -> None:
    write_run(tmp_path / "bin", 0.0, "none", 0, binarize="dynamic", samples=False)
    runs, _ = read_runs(tmp_path, find_run_dirs(tmp_path))
    headers, rows = by_setting_rows(by_setting_table(runs))
    assert "ELBO (nats)" in headers and "†" not in "".join(rows[0])
    write_run(tmp_path / "bin", 1.0, "none", 0, samples=False)  # grayscale
    runs, _ = read_runs(tmp_path, find_run_dirs(tmp_path))
    headers, rows = by_setting_rows(by_setting_table(runs))
    elbo = headers.index("ELBO (nats)")
    assert [r[elbo].endswith("†") for r in rows] == [False, True]


def test_console_results_table_marks_cross_entropy_and_mi_noise() -> None:
    base = {"mode": "batch", "anneal": "none", "state": "done", "test_kl": 3.0}
    rows = [
        base | {"lambda": 0.0, "seed": 0, "test_elbo": -344.17, "test_iwae_nll": 334.22}
        | {"test_mi": -0.101, "cross_entropy": True},
        base | {"lambda": 1.0, "seed": 0, "test_elbo": -90.0, "test_mi": 2.5}
        | {"cross_entropy": False},
    ]  # fmt: skip
    console = Console(record=True, width=160)
    console.print(results_table(rows))
    text = console.export_text()
    assert "-344.17 †" in text and "334.22 †" in text and "-90.00 †" not in text
    assert "summed cross-entropy, not a likelihood" in " ".join(text.split())  # notes wrap
    assert "-0.101" not in text and "≈ 0 ‡" in text and "2.500" in text
