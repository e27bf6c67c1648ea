"""The report's figures over several sweeps and their layout: a set of figures per sweep, short
titles, legends off the data, bands named in the legend, heatmap rows named by the whole setting,
rate–distortion axes framing the runs, image grids without thick rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from report_fixtures import make_sweep

from freebits_cli.report import build_report, by_setting_table, recommend
from freebits_cli.report import figures as F
from freebits_cli.report import info_figures as I
from freebits_cli.report import run_figures as R
from freebits_cli.report.build import figure_data
from freebits_cli.report.draw import _context, per_sweep
from freebits_cli.report.figures import FigureInput
from freebits_cli.results.reader import find_run_dirs, read_runs


def two_sweeps(root: Path) -> None:
    """Digits-like ELBOs near −60 and Fashion-like near −240: one axis cannot show both."""
    make_sweep(
        root / "digits", [0, 0.5, 2], ["none", "linear"], [0, 1],
        lambda lam, a, s: {"elbo": -60 - 2 * lam - s, "kl": 4 + 3 * lam, "iwae": 58 + lam,
                           "active_units": min(4, 1 + lam + s)},
    )  # fmt: skip
    make_sweep(
        root / "fashion", [0, 1], ["none"], [0, 1],
        lambda lam, a, s: {"elbo": -240 - lam - s, "kl": 14 + 3 * lam, "iwae": 235 + lam,
                           "active_units": 2 + s},
    )  # fmt: skip


def inputs(root: Path) -> FigureInput:
    runs, _ = read_runs(root, find_run_dirs(root, skip=root / "report"))
    by_setting = by_setting_table(runs)
    examples = [p for p in by_setting.pop("_example") if isinstance(p, str)]
    _, pareto = recommend(by_setting, runs.keys, 0.9)
    inp, _ = figure_data(runs, by_setting, examples, pareto, 0.9)
    inp.context = _context(inp)
    return inp


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, FigureInput]]:
    root = tmp_path_factory.mktemp("two")
    two_sweeps(root)
    parts = per_sweep(inputs(root))
    for _, part in parts:
        part.context = _context(part)
    return parts


def test_each_sweep_gets_its_own_figures_and_section(tmp_path: Path) -> None:
    two_sweeps(tmp_path)
    result = build_report(tmp_path)
    names = {p.name for p in result.files}
    for sweep in ("digits", "fashion"):
        for figure in ("active_units", "elbo", "pareto", "rate_distortion", "reconstructions"):
            assert f"{sweep}.{figure}.png" in names
    assert "elbo.png" not in names  # no figure mixing both sweeps
    page = result.index_html.read_text(encoding="utf-8")
    assert "Figures of sweep digits" in page and "Figures of sweep fashion" in page
    assert page.index("Figures of sweep digits") < page.index('src="digits.elbo.png"')
    assert page.index('src="digits.samples.png"') < page.index("Figures of sweep fashion")


def test_a_sweeps_figure_shows_its_own_runs_on_its_own_scale(
    sweeps: list[tuple[str, FigureInput]],
) -> None:
    (name, digits), (_, fashion) = sweeps
    assert name == "digits" and set(digits.runs["sweep"]) == {"digits"}
    assert set(fashion.by_setting["sweep"]) == {"fashion"} and "sweep" not in fashion.keys
    fig = F.fig_elbo(digits)
    low, high = fig.axes[0].get_ylim()
    assert -80 < low < high < -50  # the fashion sweep's −240 is not on this axis


def texts(fig: Figure) -> list[str]:
    found = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return [t for t in found if t]


FIGURES = [
    I.fig_active_units, F.fig_elbo, F.fig_pareto, R.fig_rate_distortion, R.fig_kl_per_dim,
    R.fig_kl_trajectories, R.fig_curves, R.fig_reconstructions, R.fig_samples,
]  # fmt: skip


@pytest.mark.parametrize("draw", FIGURES, ids=lambda f: f.__name__)
def test_titles_are_one_short_line(sweeps: list[tuple[str, FigureInput]], draw: object) -> None:
    fig = draw(sweeps[0][1])  # type: ignore[operator]
    heading = fig._suptitle.get_text()
    assert "\n" not in heading and len(heading) <= 80, heading
    assert "sweep digits" in heading


def overlaps(a: object, b: object) -> bool:
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("draw", [I.fig_active_units, F.fig_elbo, F.fig_pareto, R.fig_curves])
def test_legends_sit_off_the_data(sweeps: list[tuple[str, FigureInput]], draw: object) -> None:
    fig = draw(sweeps[0][1])  # type: ignore[operator]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [a for a in fig.findobj(Legend)]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert not overlaps(box, ax.get_window_extent(renderer)), legend.get_title().get_text()
        assert box.x1 <= fig.bbox.x1 + 1  # and on the figure


def test_bands_are_named_in_the_legend(sweeps: list[tuple[str, FigureInput]]) -> None:
    fig = I.fig_active_units(sweeps[0][1])
    assert "band: 95% interval" in texts(fig)
    assert {"none", "linear"} <= set(texts(fig))


def test_heatmap_rows_are_labelled_by_the_whole_setting(tmp_path: Path) -> None:
    make_sweep(
        tmp_path / "big", [0, 0.5, 1, 2], ["none", "linear", "cyclical"], [0, 1, 2, 3],
        lambda lam, a, s: {"active_units": 1 + lam, "samples": False},
    )  # fmt: skip
    inp = inputs(tmp_path)
    assert len(inp.runs) > 40  # the many-runs layout: one label per block of seeds
    fig = R.fig_kl_per_dim(inp)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "λ=0.5 · linear" in labels and "λ=0.5 · cyclical" in labels
    assert len(labels) == 12  # one per setting, not one per λ


def test_rate_distortion_frames_the_runs(sweeps: list[tuple[str, FigureInput]]) -> None:
    fig = R.fig_rate_distortion(sweeps[1][1])  # rates 14-17 nats, distortions ≈ 225
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert 10 < x0 < 14 and 17 < x1 < 20  # not stretched to the origin by the equal-ELBO lines
    assert 200 < y0 < y1 < 250
    assert ax.get_aspect() == "auto"


def test_image_grid_rules_are_hairlines(sweeps: list[tuple[str, FigureInput]]) -> None:
    fig = R.fig_reconstructions(sweeps[0][1])  # 4 × 4 images
    image = fig.axes[0].images[0].get_array()
    mosaic = np.ma.getdata(image).astype(float)
    rules = (np.isnan(mosaic) | np.ma.getmaskarray(image)).any(axis=0)
    width = mosaic.shape[1]
    assert 0 < rules.sum() <= width / 20  # rules ≤ 5% of the width (were 1 in 5 columns)
