"""Figures that cannot mislead: what their artists say (legend entries, axis limits and ticks,
colours, colour bars, labels), on hand-written run folders (tests/report_fixtures.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from report_fixtures import figure_input, make_sweep

from freebits_cli.report import build_report
from freebits_cli.report import figures as F
from freebits_cli.report import info_figures as I
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


@pytest.mark.parametrize("draw", [I.fig_active_units, F.fig_elbo])
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
    words = texts(I.fig_active_units(figure_input(tmp_path)))
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


# ------------------------------------------------------------------ 2. active units in [0, D]


def constant_units(root: Path, units: int, dim: int) -> Path:
    make_sweep(
        root / "flat", [0, 1, 2], ["none", "linear"], [0, 1],
        lambda lam, a, s: {"active_units": units, "latent_dim": dim, "kl": 0.0 if not units else 5},
    )  # fmt: skip
    return root


def integer_ticks(ticks: object) -> bool:
    return all(float(t) == int(t) for t in ticks)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("units", "dim"), [(32, 32), (0, 16)], ids=["all-active", "collapsed"])
def test_active_unit_axes_are_zero_to_d_with_integer_ticks(
    tmp_path: Path, units: int, dim: int
) -> None:
    from freebits_cli.report import run_figures as R

    inp = figure_input(constant_units(tmp_path, units, dim))
    au = I.fig_active_units(inp).axes[0]
    pareto = F.fig_pareto(inp).axes[0]
    curves = next(a for a in R.fig_curves(inp).axes if a.get_ylabel() == "active units")
    for lim, ticks in [
        (au.get_ylim(), au.get_yticks()),
        (pareto.get_xlim(), pareto.get_xticks()),
        (curves.get_ylim(), curves.get_yticks()),
    ]:
        assert lim == (0, dim)  # were 30.5-33.5 and -0.04-0.04
        assert integer_ticks(ticks)
    marks = [line for line in au.lines if line.get_marker() not in ("None", "")]
    assert marks and not any(line.get_clip_on() for line in marks)  # drawn whole on the edge


def test_points_off_the_curves_axis_are_marked(tmp_path: Path) -> None:
    from freebits_cli.report import run_figures as R

    make_sweep(
        tmp_path / "s", [0, 1, 2], ["none"], [0, 1, 2, 3],
        lambda lam, a, s: {"elbo": -100.0}, epochs=20,
    )  # fmt: skip
    # One run's first epoch far below the rest (λ = 2 at epoch 1 in the issue).
    inp = figure_input(tmp_path)
    key = next(k for k in inp.metrics if "lam2-none-s0" in k)
    inp.metrics[key].loc[0, "test_elbo"] = -5000.0
    ax = next(a for a in R.fig_curves(inp).axes if a.get_ylabel().startswith("test ELBO"))
    low = ax.get_ylim()[0]
    assert low > -5000  # the axis keeps the end readable ...
    below = [line for line in ax.lines if line.get_marker() == "v"]
    assert len(below) == 1 and list(below[0].get_ydata()) == [low]  # ... and marks the point
    assert list(below[0].get_xdata()) == [1.0] and R.BELOW in ax.get_ylabel()


# ------------------------------------------------------------------ 3. colours that separate


def test_neighbouring_lambdas_get_distinct_colours() -> None:
    import numpy as np

    colors = F.lambda_colors([0, 0.1, 0.25, 0.5, 1, 2, 5])
    rgb = [np.array(colors[v][:3]) for v in sorted(colors)]
    gaps = [float(np.linalg.norm(a - b)) for a, b in itertools.pairwise(rgb)]
    assert min(gaps) > 0.4, gaps  # viridis gave λ = 0 and 0.1 a gap of 0.25


def held_at_lambda(root: Path) -> Path:
    """Two informative units of 3 nats each, the other two held at λ by free bits."""
    make_sweep(
        root / "held", [0, 0.1, 0.5, 1, 2], ["none"], [0],
        lambda lam, a, s: {"kl": 6.0, "active_units": 2},
    )  # fmt: skip
    return root


def test_kl_heatmap_scale_separates_the_held_units(tmp_path: Path) -> None:
    import numpy as np

    from freebits_cli.report import run_figures as R

    fig = R.fig_kl_per_dim(figure_input(held_at_lambda(tmp_path)))
    image = fig.axes[0].images[0]
    rgb = {lam: np.array(image.cmap(image.norm(lam))[:3]) for lam in (0.5, 1, 2)}
    assert np.linalg.norm(rgb[0.5] - rgb[1]) > 0.15 and np.linalg.norm(rgb[1] - rgb[2]) > 0.15
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "nats" in bars[0].get_ylabel()
    assert "log" in bars[0].get_ylabel()
    fig.canvas.draw()  # tick labels are made at draw time
    ticks = [t.get_text() for t in bars[0].get_yticklabels() if t.get_text()]
    assert ticks and all(t.replace(".", "", 1).isdigit() for t in ticks), ticks  # 0.5, 1, 2
    # A collapsed unit (λ = 0's are at 1e-5 nats) falls below the scale: the "under" grey.
    assert image.norm(1e-5) < 0 and image.cmap(image.norm(1e-5))[:3] == pytest.approx((0.55,) * 3)


# ------------------------------------------------------------------ 4. the paper style


def test_paper_style_trajectory_rows_keep_their_setting(tmp_path: Path) -> None:
    from matplotlib.style import context

    from freebits_cli.report import run_figures as R
    from freebits_cli.report.draw import style_sheets

    make_sweep(
        tmp_path / "p", [0, 1], ["none", "linear"], [0],
        lambda lam, a, s: {"active_units": 2},
    )  # fmt: skip
    inp = figure_input(tmp_path)
    with context(style_sheets("paper")):
        fig = R.fig_kl_trajectories(inp)
        titles = [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert {"none · λ = 0", "none · λ = 1", "linear · λ = 0", "linear · λ = 1"} == set(titles)
        size = fig.axes[0].title.get_fontsize()
        assert size >= fig.axes[0].yaxis.label.get_fontsize()  # not "small" on an 8 pt style
    assert "lowest seed" not in R.fig_kl_trajectories(inp)._suptitle.get_text()


# ------------------------------------------------------------------ 5. reconstruction vs λ


def test_distortion_beside_active_units_and_in_the_table(tmp_path: Path) -> None:
    from freebits_cli.report import by_setting_rows

    make_sweep(
        tmp_path / "r", [0, 0.5, 1], ["none"], [0, 1],
        lambda lam, a, s: {"elbo": -100 - lam, "kl": 2 + 3 * lam},
    )  # fmt: skip
    inp = figure_input(tmp_path)
    _au, recon = I.fig_active_units(inp).axes
    means = [list(line.get_ydata()) for line in recon.lines if line.get_label() == "mean"]
    # recon = -ELBO - KL = 98 - 2λ: 98, 97, 96 nats (λ = 0, 0.5, 1)
    assert means == [[98.0, 97.0, 96.0]] and recon.get_ylabel().startswith("distortion")
    headers, rows = by_setting_rows(inp.by_setting)
    assert next(r[headers.index("recon (nats) †")] for r in rows).startswith("98.00")


# ------------------------------------------------------------------ 8. text runs


def text_runs(root: Path) -> Path:
    import json

    runs = make_sweep(
        root / "fortunes", [0, 0.5, 1], ["none"], [0],
        lambda lam, a, s: {"elbo": -60 - lam}, samples=False,
    )  # fmt: skip
    for run in runs:
        lam = run.name.split("-")[0]
        sentences = {
            "originals": ["the cat sat on the mat", "a long sentence " * 12],
            "reconstructions": [f"the cat sat ({lam})", f"a long reconstruction ({lam}) " * 10],
            "prior_samples": [f"from the prior ({lam})"],
            "homotopy": ["a", "b", "c"],
        }
        (run / "samples.json").write_text(json.dumps(sentences))
    return root


def test_text_page_draws_no_image_grids_and_wraps_sentences(tmp_path: Path) -> None:
    result = build_report(text_runs(tmp_path))
    page = result.index_html.read_text(encoding="utf-8")
    assert "samples.npz" not in page  # no false "Not drawn: reconstructions (…samples.npz)"
    assert not (result.out_dir / "reconstructions.png").exists()
    figures = page[page.index('id="figures"') : page.index('id="sentences"')]
    elbo = figures[figures.index('id="elbo"') :]
    caption = elbo[: elbo.index("</figcaption>")]
    assert "8-bit" not in caption and "per sentence" in caption
    sentences = page[page.index('id="sentences"') : page.index('id="runs"')]
    blocks = sentences.split('<details open class="setting">')[1:]
    assert len(blocks) == 3  # one block per setting: λ = 1 is not hidden off the side
    assert [b[b.index("<summary>") + 9 : b.index("</summary>")] for b in blocks] == [
        "λ=0 · none", "λ=0.5 · none", "λ=1 · none",
    ]  # fmt: skip
    for block in blocks:  # at most two columns per row: the sentence and its reconstruction
        for table in block.split("<table")[1:]:
            first_row = table[: table.index("</tr>")]
            assert first_row.count("<th>") <= 2
    assert "table.sentences td,table.sentences th{\nwhite-space:normal" in page
