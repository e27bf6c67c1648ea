"""Figures with one mark per run: rate-distortion, KL per latent dimension and over epochs,
training curves, reconstructions, prior samples (object API; helpers in report.figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pandas.api.types import is_numeric_dtype

from freebits_cli.report.figures import (
    FLOOR,
    LINESTYLES,
    FigureInput,
    lambda_colors,
    natural,
    scatter_runs,
    series,
    size,
    title,
    two_legends,
    unit_axis,
)
from freebits_cli.report.labels import cross_entropy_note, short_label, varying

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar
    from matplotlib.colors import Colormap, LogNorm
    from matplotlib.figure import Figure


def sort_runs(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    rest = [k for k in keys if k != "lambda"]
    return runs.sort_values(
        ["lambda", *rest, "seed"],
        key=lambda c: c if is_numeric_dtype(c) else c.astype(str).map(natural),
        kind="stable",
    )


def fig_rate_distortion(inp: FigureInput) -> Figure | str:
    from matplotlib.figure import Figure

    runs = inp.runs
    done = runs[(runs["state"] == "done") & runs["test_kl"].notna() & runs["test_recon"].notna()]
    done = done[done["lambda"].notna()]
    if done.empty:
        return "no finished run"
    fig = Figure(figsize=size(8.5, 5.5), layout="constrained")
    ax = fig.subplots()
    colors = lambda_colors(done["lambda"])
    handles = scatter_runs(ax, done, "test_kl", "test_recon", colors)
    # Lines of equal ELBO: -ELBO = R + D, so they run at slope -1 (Alemi et al. 2018, Fig. 1).
    ax.margins(0.08)
    ax.autoscale_view()
    # Frame the runs, each axis on its own scale: an axline's anchor (0, c) would otherwise
    # stretch the axes to the origin and squeeze the runs into a strip.
    limits = ax.get_xlim(), ax.get_ylim()
    total = (done["test_kl"] + done["test_recon"]).to_numpy(float)
    for c in sorted(set(total.round(1)))[:: max(len(set(total.round(1))) // 5, 1)]:
        ax.axline((0, c), slope=-1, color="0.7", linestyle=":", linewidth=0.9, zorder=1)
    ax.set(xlim=limits[0], ylim=limits[1], aspect="auto")
    ax.set_xlabel("rate R = KL(q(z|x) ‖ p(z)) (nats)")
    note = cross_entropy_note(done)
    ax.set_ylabel("distortion D = −E_q log p(x|z) (nats)" + f"\n{note}" * bool(note))
    ax.grid(alpha=0.3)
    two_legends(ax, ax, colors, handles)
    title(fig, "Rate–distortion plane, one point per run", inp)
    return fig


def fig_kl_per_dim(inp: FigureInput) -> Figure | str:
    import numpy as np
    from matplotlib.figure import Figure

    runs = inp.runs[(inp.runs["state"] == "done") & inp.runs["path"].isin(list(inp.kl_final))]
    if runs.empty:
        return "no finished run recorded KL per dimension"
    runs = sort_runs(runs, inp.keys)
    width = max(len(inp.kl_final[k]) for k in runs["path"])
    mat = np.full((len(runs), width), np.nan)
    dots: list[tuple[int, int]] = []  # (column, row) of units whose mean varies with x
    for i, key in enumerate(runs["path"]):
        order = np.argsort(-inp.kl_final[key], kind="stable")  # each row sorted: largest first
        kl = inp.kl_final[key][order]
        mat[i, : len(kl)] = np.maximum(kl, FLOOR)
        informative = inp.informative_units.get(key)
        if informative is not None and len(informative) == len(order):
            dots += [(j, i) for j, d in enumerate(order) if informative[d]]
    many = len(runs) > 40
    fig = Figure(
        figsize=size(
            min(max(5 + 0.22 * width, 9), 13),
            2.2 + (min(0.06 * len(runs), 11) if many else 0.26 * len(runs)),
        ),
        layout="constrained",
    )
    ax = fig.subplots()
    norm, cmap = kl_scale(mat)
    im = ax.imshow(mat, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    lams = runs["lambda"].to_numpy(float)
    edges = [i for i in range(1, len(lams)) if lams[i] != lams[i - 1]]
    for i in edges:  # white rules between blocks of equal λ
        ax.axhline(i - 0.5, color="white", linewidth=1.6)
    shown = varying(inp.by_setting, inp.keys) if len(inp.by_setting) else ["lambda"]
    settings = [short_label(r, shown) for _, r in runs.iterrows()]
    if many:  # label each setting's block of seeds once, at its middle, by the whole setting
        starts = [i for i in range(len(settings)) if i == 0 or settings[i] != settings[i - 1]]
        ends = [*starts[1:], len(settings)]
        every = max(1, len(starts) // 45)  # at most ~45 labels stay legible
        ax.set_yticks(
            [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)][::every],
            labels=[settings[a] for a in starts][::every],
            fontsize="x-small",
        )
    else:
        labels = [
            f"{setting} · s{r['seed']}"
            for setting, (_, r) in zip(settings, runs.iterrows(), strict=True)
        ]
        ax.set_yticks(range(len(runs)), labels=labels, fontsize="small")
    ax.set_xticks(
        range(0, width, max(width // 16, 1)),
        labels=[str(i + 1) for i in range(0, width, max(width // 16, 1))],
    )
    xlabel = "latent dimensions of the run, sorted by KL (largest first)"
    if inp.informative_units:  # which units' KL is information (their mean varies with x)
        if dots:
            ax.scatter(
                *zip(*dots, strict=True),
                s=14,
                c="white",
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
        xlabel += f"\n{INFORMATIVE_DOT}"
    ax.set_xlabel(xlabel)
    bar = fig.colorbar(im, ax=ax, extend="min", label="KL per unit (nats, log scale)")
    nats_ticks(bar)
    bar.ax.hlines(
        [v for v in sorted(set(lams)) if v >= norm.vmin], 0, 1, colors="white", linewidth=2
    )
    title(fig, "Final KL per latent dimension, one row per run", inp)
    return fig


#: What the dots on the KL heatmap mean (½ Var_x μ_j > δ/2, the covariance rule).
INFORMATIVE_DOT = (
    "●: the unit's mean varies with x (covariance rule); coloured, no ●: KL without information"
)
COLLAPSED_KL = 0.01  # nats: a unit at or below carries (next to) nothing; drawn grey, off the scale


def kl_scale(mat: np.ndarray) -> tuple[LogNorm, Colormap]:
    """A log colour scale spent where the units are: from just below the smallest KL above
    COLLAPSED_KL to the largest, so units held at λ = 0.5, 1 and 2 get clearly different colours
    (a scale from 1e-3 gave them all the same yellow); collapsed units below it are grey."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    values = mat[np.isfinite(mat)]
    live = values[values > COLLAPSED_KL]
    top = max(float(values.max()) if len(values) else 1.0, 10 * COLLAPSED_KL)
    low = float(live.min()) / 1.5 if len(live) else COLLAPSED_KL / 10
    low = min(max(low, COLLAPSED_KL), top / 10)  # at least one decade of colour
    return LogNorm(vmin=low, vmax=top), colormaps["viridis"].with_extremes(under="0.55")


def nats_ticks(bar: Colorbar) -> None:
    """Colour-bar ticks as plain numbers of nats (0.2, 0.5, 1, 2), not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def fig_kl_trajectories(inp: FigureInput) -> Figure | str:
    import numpy as np
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, NullLocator

    keys = [k for k in inp.examples if k in inp.kl_history]
    if not keys:
        return "no finished run has a readable kl_per_dim.csv"
    examples = inp.runs.set_index("path").loc[keys].reset_index()
    _, lines = series(examples, inp.keys)
    lams = sorted(set(examples["lambda"].dropna()))
    lines = lines[: max(48 // max(len(lams), 1), 1)]  # at most ~48 panels stay legible
    width, height = 2.4 + 2.5 * len(lams), 1.5 + 2.0 * len(lines)
    fig = Figure(figsize=size(width, height))
    # Fixed margins (inches) instead of constrained layout: with dozens of log axes it is 3x faster.
    lines_up = title(fig, "KL per latent unit over training", inp)  # "lowest seed": the caption
    margins = {"left": 1.25 / width, "right": 1 - 1.0 / width, "bottom": 0.6 / height}
    top = 1 - (0.45 + 0.2 * lines_up) / height
    fig.subplots_adjust(top=top, wspace=0.08, hspace=0.3, **margins)
    axes = fig.subplots(len(lines), len(lams), sharex=True, sharey=True, squeeze=False)
    tables = {k: inp.kl_history[k].pivot(index="epoch", columns="dim", values="kl") for k in keys}
    finals = np.concatenate([t.iloc[-1].to_numpy(float) for t in tables.values()])
    norm, cmap = kl_scale(np.maximum(finals, FLOOR))
    for i, (label, g) in enumerate(lines):
        for j, lam in enumerate(lams):
            ax, rows = axes[i][j], g[g["lambda"] == lam]
            if rows.empty:
                ax.set_axis_off()
                continue
            key = rows["path"].iloc[0]
            kl = tables[key].clip(lower=FLOOR)  # (epochs, dims)
            epochs = kl.index.to_numpy(float)
            segs = [np.column_stack([epochs, kl[d].to_numpy(float)]) for d in kl.columns]
            lc = LineCollection(segs, cmap=cmap, norm=norm, linewidths=1.1)
            lc.set_array(kl.iloc[-1].to_numpy(float))  # colour: the unit's final KL
            ax.add_collection(lc)
            marks = [
                (e, kl.loc[e, d])
                for d, e in enumerate(inp.collapse.get(key) or [])
                if isinstance(e, int) and e in kl.index and d in kl.columns
            ]
            if marks:
                ax.plot(*zip(*marks, strict=True), "x", color="#D55E00", markersize=5)
            if lam > 0:
                ax.axhline(lam, color="black", linestyle="--", linewidth=0.9)
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks: clutter and slow
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.autoscale_view()
            ax.grid(alpha=0.25)
            # The row's setting in each panel's title (a two-line y label lost its first line to
            # the margin in small styles); the title's size is the style's axes.titlesize.
            ax.set_title(f"{label} · λ = {lam:g}" if label else f"λ = {lam:g}")
            ax.set_ylabel("KL (nats)" if j == 0 else "")
    fig.supxlabel("epoch", fontsize="medium")
    bar = fig.colorbar(
        ScalarMappable(norm, cmap),
        ax=axes,
        extend="min",
        label="final KL of the unit (nats)",
        fraction=0.35 / width,
        pad=0.15 / width,
        aspect=40,
    )
    nats_ticks(bar)
    return fig


def fig_curves(inp: FigureInput) -> Figure | str:
    import numpy as np
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    runs = inp.runs[inp.runs["path"].isin(list(inp.metrics)) & inp.runs["lambda"].notna()]
    if runs.empty:
        return "no run recorded an epoch"
    colors = lambda_colors(runs["lambda"])
    schedules = sorted(runs["anneal"].astype(str).unique(), key=natural)
    note = cross_entropy_note(runs)
    quantities = [("test_elbo", "test ELBO (nats)" + f"\n{note}" * bool(note))]
    quantities += [("test_kl", "test KL (nats)")]
    quantities += [("active_units", "active units"), ("beta", "β (weight of the KL term)")]
    fig = Figure(figsize=size(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, (col, label) in zip(axes.ravel(), quantities, strict=True):
        segs, cols, styles = [], [], []
        for _, r in runs.iterrows():
            m = inp.metrics[r["path"]]
            if col in m and m[col].notna().any():
                segs.append(m[["epoch", col]].dropna().to_numpy(float))
                cols.append(colors[r["lambda"]])
                styles.append(LINESTYLES[schedules.index(str(r["anneal"])) % 4])
        ax.add_collection(
            LineCollection(segs, colors=cols, linestyles=styles, linewidths=1.2, alpha=0.85)
        )
        ax.autoscale_view()
        if col == "test_elbo" and segs:  # the first epochs sit far below: keep the end readable
            y = np.concatenate([s[:, 1] for s in segs])
            lo, hi = np.nanpercentile(y, 5), np.nanmax(y)
            ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
            if mark_below(ax, segs, cols):
                label += f"\n{BELOW}"
        if col == "active_units":
            unit_axis(ax, [int(d) for d in runs["latent_dim"].dropna()])
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color="black", linestyle=LINESTYLES[i % 4], label=s)
        for i, s in enumerate(schedules)
    ]
    two_legends(axes[0, 1], axes[1, 1], colors, handles)
    title(fig, "Training curves on the test set, one line per run", inp)
    return fig


BELOW = "▼ below the axis"


def mark_below(ax: Axes, segs: Sequence[np.ndarray], colors: Sequence[object]) -> bool:
    """Points under the axis' lower limit, drawn as ▼ on its edge in their line's colour, so a
    cut-off early epoch is seen, not silently lost; whether there were any (the axis label then
    says what ▼ means: a legend would sit on the lines)."""
    low = ax.get_ylim()[0]
    shown = False
    for seg, color in zip(segs, colors, strict=True):
        under = seg[seg[:, 1] < low]
        if len(under):
            ax.plot(
                under[:, 0],
                [low] * len(under),
                "v",
                color=color,
                markersize=6,
                clip_on=False,
                markeredgecolor="black",
                markeredgewidth=0.4,
                label=BELOW if not shown else None,
            )
            shown = True
    return shown


def _image_rows(inp: FigureInput, array: str, with_originals: bool) -> Figure | str:
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    keys = [k for k in inp.examples if array in inp.samples.get(k, {})][:30]
    if not keys and inp.text:
        return NOT_APPLICABLE  # text runs' samples are sentences, shown on the page
    if not keys:
        return "no finished run saved samples.npz"
    examples = inp.runs.set_index("path").loc[keys].reset_index()
    shown = varying(inp.by_setting, inp.keys)
    rows: list[tuple[str, np.ndarray]] = []
    for sweep, g in examples.groupby("sweep", sort=False):
        first = inp.samples[g["path"].iloc[0]]
        if with_originals and "originals" in first:
            rows.append(
                (
                    f"originals ({sweep})" if examples["sweep"].nunique() > 1 else "test images",
                    _strip(first["originals"], first),
                )
            )
        for _, r in sort_runs(g, inp.keys).iterrows():
            rows.append((short_label(r, shown), _strip(inp.samples[r["path"]][array], first)))
    # One mosaic, one imshow: far faster than an axes per row. White gaps between rows,
    # hairline light-grey (NaN) rules between images, white padding right of shorter rows.
    unit = max(strip.shape[0] for _, strip in rows)  # pixels of one image's height
    gap, width = max(unit // 4, 1), max(strip.shape[1] for _, strip in rows)
    blocks, centres, top = [], [], 0
    colour = rows[0][1].ndim == 3
    for _, strip in rows:
        # Grayscale is drawn dark-on-white (gray_r: 0 is white); colour as is (1 is white).
        padded = np.full((strip.shape[0] + gap, width, *strip.shape[2:]), float(colour))
        padded[: strip.shape[0], : strip.shape[1]] = strip
        blocks.append(padded)
        centres.append(top + (strip.shape[0] - 1) / 2)
        top += padded.shape[0]
    mosaic = np.vstack(blocks)[:-gap]
    inch = 0.62 / unit  # about 0.6 inch per image
    inches = (max(2.4 + width * inch, 9.0), 1.2 + mosaic.shape[0] * inch)  # 9: room for titles
    fig = Figure(figsize=size(*inches), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["gray_r"].with_extremes(bad=RULE)
    if colour:  # RGB cannot show NaN: the rules between images become light grey
        ax.imshow(np.where(np.isnan(mosaic), 0.85, mosaic), interpolation="nearest")
    else:
        ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks(centres, labels=[label for label, _ in rows], fontsize="medium")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


#: A figure function's answer when the figure has no meaning for these runs (images of text):
#: not drawn, and not listed as missing.
NOT_APPLICABLE = ""
RULE = "#d9d9d9"  # the hairline between images
UPSAMPLE_TO = 28  # pixels: small images are enlarged so a one-pixel rule stays a hairline


def _strip(images: np.ndarray, meta: dict[str, np.ndarray], n: int = 10) -> np.ndarray:
    """Up to n images [P] side by side as one [h, n*(w+1)] array (NaN columns between), each
    pixel repeated r × r times so an image is at least UPSAMPLE_TO pixels high and the rules
    between images stay thin; colour images (3, h, w) as [h, n*(w+1), 3]."""
    import numpy as np

    shape = [int(v) for v in np.ravel(meta["image_shape"])]
    r = max(1, -(-UPSAMPLE_TO // shape[-2]))
    imgs = np.clip(images[:n].reshape(-1, *shape), 0, 1)
    if len(shape) == 3:  # (C, H, W) -> (H, W, C) for imshow; one channel is grayscale
        imgs = imgs.transpose(0, 2, 3, 1) if shape[0] == 3 else imgs[:, 0]
    imgs = imgs.repeat(r, axis=1).repeat(r, axis=2)
    h, w = imgs.shape[1:3]
    strip = np.full((h, len(imgs) * (w + 1) - 1, *imgs.shape[3:]), np.nan)
    for i, img in enumerate(imgs):
        strip[:, i * (w + 1) : i * (w + 1) + w] = img
    return strip


def fig_reconstructions(inp: FigureInput) -> Figure | str:
    fig = _image_rows(inp, "reconstructions", with_originals=True)
    if not isinstance(fig, str):
        title(fig, "Test images and their reconstructions", inp)
    return fig


def fig_samples(inp: FigureInput) -> Figure | str:
    fig = _image_rows(inp, "prior_samples", with_originals=False)
    if not isinstance(fig, str):
        title(fig, "Prior samples z ~ N(0, I), decoded", inp)
    return fig
