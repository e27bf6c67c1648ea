"""Figures of the report, drawn with matplotlib's object API (no pyplot state; Agg for PNG).

Colours: up to eight λ values take the Okabe-Ito colours (distinct for colour-blind readers) in
an order where neighbouring λ never get similar colours (a sequential map gave λ = 0 and 0.1
nearly the same); more λ values use viridis, stopped at 85% so the pale yellow end stays visible
on white. Categories (schedules) use the Okabe-Ito palette *and* a line style / marker each, so
nothing depends on colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli.report.labels import (
    LABELS,
    NO_INTERVAL,
    cross_entropy_note,
    short_label,
    varying,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FLOOR = 1e-4  # nats: KL values below are drawn at the floor of the log axes (collapsed units)


@dataclass
class FigureInput:
    """What the figures read; run keys are run folders relative to the results folder."""

    runs: pd.DataFrame  # one row per run (summary.csv)
    by_setting: pd.DataFrame  # one row per setting (by_setting.csv)
    keys: list[str]  # setting columns
    metrics: dict[str, pd.DataFrame]  # run key -> per-epoch rows
    kl_final: dict[str, np.ndarray]  # run key -> final KL per dimension
    collapse: dict[str, list[Any]]  # run key -> epoch each dimension collapsed
    examples: list[str]  # one run key per setting (lowest seed), in by_setting order
    kl_history: dict[str, pd.DataFrame]  # example run key -> kl_per_dim.csv rows
    samples: dict[str, dict[str, np.ndarray]]  # example run key -> samples.npz arrays
    pareto: pd.DataFrame  # ELBO/active-units Pareto front, with a `recommended` column
    keep_share: float
    context: str = ""  # what was swept, for the titles
    #: done run key -> whether each unit's posterior mean varies with x at the final epoch
    #: (kl_per_dim.csv's kl_spread = ½ Var_x μ_j above δ/2: the covariance rule), by `dim`
    informative_units: dict[str, np.ndarray] = field(default_factory=dict)
    text: bool = False  # text runs: samples are sentences (samples.json), not images
    #: one row per remedy at its best setting (`report.remedies.remedies_table`)
    remedies: pd.DataFrame | None = None


@dataclass
class FigureOutput:
    files: list[Path] = field(default_factory=list)
    # file, title, caption, the other formats' files, the group it is shown under ("" or a sweep)
    shown: list[tuple[str, str, str, list[str], str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "figure (why not drawn)"
    warnings: list[str] = field(default_factory=list)


DESIGN = (8.0, 5.0)  # inches: a one-panel figure in the default style (styles/default.mplstyle)


def _context(inp: FigureInput) -> str:
    """Whose runs a figure shows, for its title: "sweep demo, 3 seeds" (what was swept is on the
    figure's axes and legends, and in the page's tables)."""
    sweeps = list(dict.fromkeys(inp.runs["sweep"].astype(str)))
    seeds = inp.runs["seed"].nunique()
    names = f"sweep {sweeps[0]}" if len(sweeps) == 1 else f"{len(sweeps)} sweeps"
    return f"{names}, {seeds} seed{'s' * (seeds != 1)}"


def natural(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text.removeprefix("λ=")), "")
    except ValueError:
        return (0 if text == "none" else 1, 0.0, text)


#: λ's colours, in order: each differs in hue and lightness from the one before it.
LAMBDA_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442")
LAMBDA_COLORS += ("#000000",)


def lambda_colors(lams: Sequence[float]) -> dict[float, Any]:
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba

    values = sorted({float(v) for v in lams if v == v})
    if len(values) <= len(LAMBDA_COLORS):
        return {v: to_rgba(c) for v, c in zip(values, LAMBDA_COLORS, strict=False)}
    cmap = colormaps["viridis"]
    return {v: cmap(0.85 * i / max(len(values) - 1, 1)) for i, v in enumerate(values)}


def _style(i: int) -> dict[str, Any]:
    return {"color": OKABE_ITO[i % 7], "linestyle": LINESTYLES[i % 4], "marker": MARKERS[i % 8]}


def series(df: pd.DataFrame, keys: Sequence[str]) -> tuple[str, list[tuple[str, pd.DataFrame]]]:
    """Split settings into lines over λ: (legend title, [(label, rows sorted by λ)])."""
    rest = [k for k in keys if k != "lambda"]
    named = [k for k in varying(df, rest) if df[k].nunique(dropna=False) > 1]
    groups = df.groupby(rest, dropna=False, sort=False) if rest else [((), df)]
    lines = [(short_label(g.iloc[0], named), g.sort_values("lambda")) for _, g in groups]
    return " · ".join(LABELS.get(k, k) for k in named), lines


def _lambda_axis(ax: Axes, lams: Sequence[float]) -> None:
    """Symlog λ axis: λ = 0 (no free bits) sits on the linear part, the rest on a log scale."""
    from matplotlib.ticker import NullLocator

    values = sorted({float(v) for v in lams if v == v})
    positive = [v for v in values if v > 0]
    if positive:
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.6)
    ax.set_xticks(values, labels=[f"{v:g}" for v in values], rotation=45 * (len(values) > 7))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("free-bits threshold λ (nats)")


def size(width: float, height: float) -> tuple[float, float]:
    """A figure designed at width × height inches for the default style, scaled so that a
    one-panel figure (designed 8 × 5 in) gets the active style's `figure.figsize`."""
    from matplotlib import rcParams

    style_width, style_height = rcParams["figure.figsize"]
    return width * style_width / DESIGN[0], height * style_height / DESIGN[1]


def title(fig: Figure, main: str, inp: FigureInput) -> int:
    """A short title: what the figure shows and whose runs, one line where it fits (the how-to-read
    is the caption's job); its line count. A style with `figure.titlesize: 0` (paper: the caption
    is the paper's) draws none."""
    import textwrap

    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    if rcParams["figure.titlesize"] == 0:
        return 0
    points = FontProperties(size=rcParams["figure.titlesize"]).get_size_in_points()
    chars = int(fig.get_figwidth() * 11 * 11.5 / points)  # about 11 characters per inch at 11.5 pt
    lines = textwrap.wrap(f"{main} ({inp.context})" if inp.context else main, chars)
    fig.suptitle("\n".join(lines))  # size: the style's figure.titlesize
    return len(lines)


def outside(ax: Axes, handles: list, title: str, loc: str = "upper left", y: float = 1.0) -> None:
    """A legend right of the axes, off the data, kept beside any legend the axes already has."""
    from matplotlib.legend import Legend

    labels = [h[-1].get_label() if isinstance(h, tuple) else h.get_label() for h in handles]
    legend = Legend(
        ax,
        handles,
        labels,
        title=title or None,
        loc=loc,
        fontsize="small",
        bbox_to_anchor=(1.02, y),
        borderaxespad=0,
    )
    ax.add_artist(legend).set_clip_on(False)  # add_artist clips to the axes: undo


def _by_lambda(
    ax: Axes,
    inp: FigureInput,
    metric: str,
    ylabel: str,
    legend: bool = True,
    verdicts: bool = True,
    keys_after: Sequence[Any] = (),
    legend_ax: Axes | None = None,
) -> str:
    """Mean over seeds vs λ with a 95% interval band, one line per schedule (and mode, ...).

    Each band has an outline in its line's colour, so where bands overlap both stay readable;
    the legend pairs each line with its band and names the band. Settings with one seed have
    no interval: the legend says so ("n = 1: no interval") instead of naming a band not drawn.
    Settings whose code carries no information (the verdict) get a mark on their point;
    `keys_after`: more legend entries (e.g. what a second series on the axes means);
    `legend_ax`: the axes whose right side holds the legend (default `ax`)."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    done = inp.by_setting[(inp.by_setting["n"] > 0) & inp.by_setting[f"{metric}_mean"].notna()]
    title, lines = series(done, inp.keys)
    handles: list[Any] = []
    banded = 0
    for i, (label, g) in enumerate(lines):
        x, y = g["lambda"].to_numpy(float), g[f"{metric}_mean"].to_numpy(float)
        lo, hi = g[f"{metric}_lo"].to_numpy(float), g[f"{metric}_hi"].to_numpy(float)
        style = _style(i)
        (line,) = ax.plot(x, y, label=label or "mean", **style)  # width, size: the style's
        if not (np.isfinite(lo) & np.isfinite(hi)).any():
            handles.append(line)
            continue
        banded += 1
        ax.fill_between(x, lo, hi, color=style["color"], alpha=0.12, linewidth=0)
        for edge in (lo, hi):
            ax.plot(x, edge, color=style["color"], linewidth=0.7, alpha=0.6, linestyle=":")
        band = Patch(facecolor=style["color"], alpha=0.25, edgecolor=style["color"])
        handles.append((band, line))
    marks = mark_verdicts(ax, done, "lambda", f"{metric}_mean") if verdicts else []
    _lambda_axis(ax, done["lambda"])
    # Frame the means, not the bands: with 2-3 seeds a t-based CI can be ten times the spread
    # between settings and would flatten every line; wide bands simply run off the axes.
    means = done[f"{metric}_mean"].to_numpy(float)
    if len(means):
        lo, hi = float(means.min()), float(means.max())
        pad = max(0.6 * (hi - lo), 0.01 * max(abs(lo), abs(hi)), 0.05)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and handles:
        keys: list[Any] = []
        if banded:
            keys.append(
                Patch(facecolor="0.6", alpha=0.35, edgecolor="0.4", label="band: 95% interval")
            )
        if (done["n"] == 1).any():
            keys.append(Line2D([], [], linestyle="", label=NO_INTERVAL))
        outside(legend_ax or ax, [*handles, *keys_after, *keys, *marks], title)
    return title


#: (marker, colour, legend label) of the verdicts a point is marked with (none: informative).
VERDICT_MARKS = {
    "kl_without_information": ("X", "#D55E00", "KL without information"),
    "collapsed": ("o", "0.35", "collapsed (KL ≈ 0)"),
}


def mark_verdicts(ax: Axes, rows: pd.DataFrame, x: str, y: str) -> list[Any]:
    """A mark over each point whose setting's code carries no information about x (verdict
    `kl_without_information` or `collapsed`, results/information.py); their legend handles."""
    from matplotlib.lines import Line2D

    if "information" not in rows:
        return []
    handles = []
    for verdict, (marker, color, label) in VERDICT_MARKS.items():
        hit = rows[rows["information"] == verdict]
        if hit.empty:
            continue
        ax.scatter(
            hit[x],
            hit[y],
            s=170,
            marker=marker,
            facecolors="none" if marker == "o" else color,
            edgecolors=color,
            linewidths=1.6,
            zorder=5,
            clip_on=False,
            label=label,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                color=color,
                linestyle="",
                markersize=9,
                markerfacecolor="none" if marker == "o" else color,
                label=label,
            )
        )
    return handles


def unit_axis(ax: Axes, dims: Sequence[int], axis: str = "y") -> None:
    """An active-unit axis: [0, D] (a count of latent units cannot leave it), integer ticks, and
    the marks on its ends drawn whole rather than cut in half by the frame."""
    from matplotlib.ticker import MaxNLocator

    top = max((int(d) for d in dims), default=1) or 1
    (ax.set_ylim if axis == "y" else ax.set_xlim)(0, top)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(integer=True))
    from matplotlib.collections import PathCollection

    for line in ax.lines:
        if line.get_marker() not in (None, "", "None", " "):
            line.set_clip_on(False)
    for points in ax.collections:
        if isinstance(points, PathCollection):  # scatter points
            points.set_clip_on(False)


def fig_elbo(inp: FigureInput) -> Figure | str:
    from matplotlib.figure import Figure

    done = inp.by_setting[inp.by_setting["n"] > 0]
    if done.empty:
        return "no finished run"
    iwae = "test_iwae_nll_mean" in done and done["test_iwae_nll_mean"].notna().any()
    bits = "test_bits_per_dim_mean" in done and done["test_bits_per_dim_mean"].notna().any()
    ppl = "test_elbo_ppl_mean" in done and done["test_elbo_ppl_mean"].notna().any()
    bits = bits or ppl  # the last panel: bits/dim for images, perplexity for text
    fig = Figure(figsize=size(8 + 5 * (iwae + bits), 5), layout="constrained")
    axes = fig.subplots(1, 1 + iwae + bits, squeeze=False)[0]
    note = cross_entropy_note(done)
    ylabel = "test ELBO (nats per example; higher is better)"
    last = iwae + bits  # one legend, right of the last panel
    _by_lambda(axes[0], inp, "test_elbo", f"{ylabel}\n{note}" if note else ylabel, not last)
    if iwae:
        k = inp.runs["iwae_samples"].dropna()
        k_text = f", k = {int(k.max())}" if len(k) else ""
        ylabel = f"IWAE NLL{k_text} (nats; lower is better)"
        ylabel = f"{ylabel}\n{note}" if note else ylabel
        _by_lambda(axes[1], inp, "test_iwae_nll", ylabel, last == 1)
        axes[1].set_title("importance-weighted NLL (Burda et al. 2015)", fontsize="medium")
    if ppl:  # text: exp(NLL per predicted token), the IWAE bound's when there is one
        both = iwae and done["test_ppl_mean"].notna().any()
        metric = "test_ppl" if both else "test_elbo_ppl"
        _by_lambda(axes[-1], inp, metric, "perplexity (lower is better)")
        axes[-1].set_title(
            f"test perplexity ({'IWAE' if both else 'ELBO'} bound)", fontsize="medium"
        )
    elif bits:  # image likelihoods: NLL / (C·H·W · ln 2), the IWAE bound's when there is one
        both = iwae and done["test_iwae_bits_per_dim_mean"].notna().any()
        metric = "test_iwae_bits_per_dim" if both else "test_bits_per_dim"
        _by_lambda(axes[-1], inp, metric, "bits per dimension (lower is better)")
        axes[-1].set_title(f"{'IWAE' if both else 'ELBO'} bound in bits/dim", fontsize="medium")
    title(fig, "Test ELBO vs free-bits λ", inp)
    return fig


def scatter_runs(ax: Axes, df: pd.DataFrame, x: str, y: str, colors: dict[float, Any]) -> list:
    """Points coloured by λ, one marker per schedule; returns the schedule legend handles."""
    from matplotlib.lines import Line2D

    handles = []
    schedules = sorted(df["anneal"].astype(str).unique(), key=natural)
    for j, schedule in enumerate(schedules):
        g = df[df["anneal"].astype(str) == schedule]
        ax.scatter(
            g[x],
            g[y],
            c=[colors.get(v, "0.5") for v in g["lambda"]],
            marker=MARKERS[j % 8],
            s=52,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker=MARKERS[j % 8],
                linestyle="",
                markerfacecolor="white",
                label=schedule,
            )
        )
    return handles


def two_legends(top: Axes, bottom: Axes, colors: dict[float, Any], schedules: list) -> None:
    """λ colours right of `top`, schedule markers right of `bottom`: outside the data, below the
    title (figure legends would collide with it), and kept beside any legend the axes has."""
    from matplotlib.lines import Line2D

    lam = [
        Line2D([], [], color=c, marker="o", linestyle="", markersize=8, label=f"{v:g}")
        for v, c in colors.items()
    ]
    if lam:
        outside(top, lam, "λ (nats)")
    if schedules:
        outside(bottom, schedules, "schedule", loc="lower left", y=0.0)


def fig_pareto(inp: FigureInput) -> Figure | str:
    from matplotlib.figure import Figure

    bs = inp.by_setting
    ok = bs[(bs["n"] > 0) & bs["test_elbo_mean"].notna() & bs["active_units_mean"].notna()]
    if ok.empty:
        return "no finished run"
    fig = Figure(figsize=size(8.5, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(
        ok["active_units_mean"],
        ok["test_elbo_mean"],
        # Clipped to [0, D]: asymmetric where the t-interval ran past the range.
        xerr=[
            ok["active_units_mean"] - ok["active_units_lo"],
            ok["active_units_hi"] - ok["active_units_mean"],
        ],
        yerr=ok["test_elbo_ci95"],
        fmt="none",
        ecolor="0.65",
        elinewidth=0.9,
        zorder=2,
    )
    colors = lambda_colors(ok["lambda"])
    handles = scatter_runs(ax, ok, "active_units_mean", "test_elbo_mean", colors)
    mark_verdicts(ax, ok, "active_units_mean", "test_elbo_mean")  # named in ax.legend below
    front = inp.pareto.sort_values("active_units_mean")
    for n, (_, f) in enumerate(front.groupby("sweep") if "sweep" in front else [((), front)]):
        ax.plot(
            f["active_units_mean"],
            f["test_elbo_mean"],
            color="black",
            linewidth=1.2,
            zorder=2.5,
            label="Pareto front" if n == 0 else None,
        )
    pick = front[front["recommended"].astype(bool)]
    ax.scatter(
        pick["active_units_mean"],
        pick["test_elbo_mean"],
        s=340,
        facecolors="none",
        edgecolors="#D55E00",
        linewidths=2.4,
        zorder=4,
        label="recommended",
    )
    for d in sorted({int(d) for d in ok["latent_dim"].dropna()}):
        ax.axvline(
            inp.keep_share * d,
            color="0.35",
            linestyle="--",
            linewidth=1,
            label=f"{inp.keep_share:.0%} of D = {d} units",
        )
    unit_axis(ax, [int(d) for d in ok["latent_dim"].dropna()], axis="x")
    ax.set_xlabel("active units, covariance rule (mean over seeds)")
    note = cross_entropy_note(ok)
    ax.set_ylabel("test ELBO (nats, mean over seeds; higher is better)" + f"\n{note}" * bool(note))
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), borderaxespad=0, fontsize="small")
    two_legends(ax, ax, colors, handles)
    title(fig, "ELBO vs active units: the Pareto front", inp)
    return fig
