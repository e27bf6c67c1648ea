"""Figures that cannot mislead: what their artists say (legend entries, axis limits and ticks,
colours, colour bars, labels), on hand-written run folders (tests/report_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure
from report_fixtures import figure_input, make_sweep

from freebits_cli.report import build_report
from freebits_cli.report import figures as F
from freebits_cli.report.draw import caption
from freebits_cli.report.labels import NO_INTERVAL


def texts(fig: Figure) -> list[str]:
    found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in found if t]


def one_seed(root: Path) -> Path:
    make_sweep(
        root / "one", [0, 0.5, 1], ["none", "linear"], [0],
        lambda lam, a, s: {"elbo": -100 - lam, "kl": 3 + lam, "active_units": 2 + lam},
    )  # fmt: skip
    return root


# ------------------------------------------------------------------ 1. n = 1: no interval


@pytest.mark.parametrize("draw", [F.fig_active_units, F.fig_elbo])
def test_one_seed_legend_names_no_band(tmp_path: Path, draw: object) -> None:
    fig = draw(figure_input(one_seed(tmp_path)))  # type: ignore[operator]
    words = texts(fig)
    assert "band: 95% interval" not in words  # no band is drawn
    assert NO_INTERVAL in words
    assert not any(c.get_paths() for ax in fig.axes for c in ax.collections)  # no band polygons


def test_two_seeds_keep_the_band(tmp_path: Path) -> None:
    make_sweep(
        tmp_path / "two", [0, 1], ["none"], [0, 1],
        lambda lam, a, s: {"elbo": -100 - lam - s, "active_units": 2 + s},
    )  # fmt: skip
    words = texts(F.fig_active_units(figure_input(tmp_path)))
    assert "band: 95% interval" in words and NO_INTERVAL not in words


def test_one_seed_tables_and_captions_say_no_interval(tmp_path: Path) -> None:
    inp = figure_input(one_seed(tmp_path))
    assert "more seeds" in caption("elbo", inp)[1] and "more seeds" in caption("pareto", inp)[1]
    assert "more seeds" not in caption("curves", inp)[1]
    page = build_report(tmp_path).index_html.read_text(encoding="utf-8")
    strategies = page[page.index('id="strategies"') : page.index('id="pareto"')]
    assert "-100.00 (n = 1: no interval)" in strategies and "--seeds 0,1,2" in strategies
    by_setting = page[page.index('id="by-setting"') : page.index('id="strategies"')]
    assert "(n = 1: no interval)" in by_setting
