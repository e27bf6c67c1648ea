"""Figures of what the latent code carries, against λ: active units by both rules beside the
distortion and (where the data has labels) a linear probe's accuracy, and where the rate goes —
information or marginal KL (Hoffman & Johnson 2016). Helpers in report.figures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freebits_cli.report.figures import (
    FigureInput,
    _by_lambda,
    _style,
    outside,
    series,
    size,
    title,
    unit_axis,
)
from freebits_cli.report.labels import cross_entropy_note

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _has(df: Any, metric: str) -> bool:
    return f"{metric}_mean" in df and bool(df[f"{metric}_mean"].notna().any())


def fig_active_units(inp: FigureInput) -> Figure | str:
    """Active units by the covariance rule (with its band) and the KL rule (dotted, hollow) vs λ;
    beside it the distortion (reconstruction NLL) vs λ, and the probe's accuracy where the runs
    computed one, so what free bits buy and cost is read on one row."""
    from matplotlib.figure import Figure

    done = inp.by_setting[inp.by_setting["n"] > 0]
    if done.empty:
        return "no finished run"
    probe = _has(done, "test_probe_accuracy")
    panels = 2 + probe
    fig = Figure(figsize=size(8 + 5 * (panels - 1), 5), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    _units(axes[0], inp, legend_ax=axes[-1])  # one legend, right of the last panel
    note = cross_entropy_note(done)
    ylabel = "distortion: test reconstruction NLL (nats; lower is better)"
    _by_lambda(axes[1], inp, "test_recon", ylabel + f"\n{note}" * bool(note), legend=False)
    axes[1].set_title("reconstruction vs λ", fontsize="medium")
    if probe:
        _by_lambda(axes[2], inp, "test_probe_accuracy", "linear-probe test accuracy", legend=False)
        axes[2].set_ylim(0, 1)
        axes[2].set_title("is z useful? a linear probe (Li et al. 2019)", fontsize="medium")
    title(fig, "Active units and distortion vs free-bits λ", inp)
    return fig


def _units(ax: Axes, inp: FigureInput, legend_ax: Axes) -> None:
    """Both active-unit rules: the covariance rule as lines with bands, the KL rule over them as
    dotted lines with hollow markers in the same colours; the latent size D dashed."""
    from matplotlib.lines import Line2D

    done = inp.by_setting[inp.by_setting["n"] > 0]
    rules: list[Any] = [Line2D([], [], color="0.2", marker="o", label="covariance rule")]
    if _has(done, "active_units_kl"):
        _, lines = series(done[done["active_units_kl_mean"].notna()], inp.keys)
        for i, (_, g) in enumerate(lines):
            style = _style(i)
            ax.plot(
                g["lambda"],
                g["active_units_kl_mean"],
                color=style["color"],
                linestyle=":",
                marker=style["marker"],
                markerfacecolor="white",
                linewidth=1.4,
                zorder=2.5,
            )
        rules.append(
            Line2D(
                [],
                [],
                color="0.2",
                marker="o",
                markerfacecolor="white",
                linestyle=":",
                label="KL rule",
            )
        )
    _by_lambda(
        ax, inp, "active_units", "active units (count)", keys_after=rules, legend_ax=legend_ax
    )
    dims = sorted({int(d) for d in done["latent_dim"].dropna()})
    for d in dims:  # the ceiling: every latent unit active
        ax.axhline(d, color="0.3", linestyle=(0, (6, 3)), linewidth=1.2, zorder=1)
        ax.annotate(
            f"latent size D = {d}",
            (0.01, d),
            xycoords=("axes fraction", "data"),
            va="top",
            fontsize="small",
            color="0.25",
        )
    unit_axis(ax, dims)
    ax.set_title("active units vs λ (two rules)", fontsize="medium")


#: The sign above a bar whose setting's code carries no information.
VERDICT_SIGNS = {"kl_without_information": "×", "collapsed": "○"}


def fig_rate_split(inp: FigureInput) -> Figure | str:
    """Where the rate goes (Hoffman & Johnson 2016): E_x KL(q(z|x)‖p(z)) = I(x;z) + KL(q(z)‖p(z)).
    Per λ, a bar of the mutual information (with its interval) under the marginal KL, one panel
    per schedule / mode; the analytic mean KL as a diamond on top (the two parts estimate it)."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    done = inp.by_setting[inp.by_setting["n"] > 0]
    if not (_has(done, "test_mi") and _has(done, "test_marginal_kl")):
        return "no finished run estimated the mutual information and the marginal KL"
    done = done[done["test_mi_mean"].notna() & done["test_marginal_kl_mean"].notna()]
    name, lines = series(done, inp.keys)
    fig = Figure(figsize=size(3 + 4.2 * len(lines), 5), layout="constrained")
    axes = fig.subplots(1, len(lines), squeeze=False, sharey=True)[0]
    info, hollow = "#0072B2", "#E69F00"
    for ax, (label, g) in zip(axes, lines, strict=True):
        x = np.arange(len(g))
        mi = np.clip(g["test_mi_mean"].to_numpy(float), 0, None)  # I(x;z) ≥ 0: noise below
        marginal = np.clip(g["test_marginal_kl_mean"].to_numpy(float), 0, None)
        ax.bar(x, mi, color=info, label="information I(x;z)")
        ax.bar(x, marginal, bottom=mi, color=hollow, label="marginal KL(q(z)‖p(z))")
        lo, hi = g["test_mi_lo"].to_numpy(float), g["test_mi_hi"].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.errorbar(
            x[ok],
            mi[ok],
            yerr=[np.clip(mi[ok] - lo[ok], 0, None), np.clip(hi[ok] - mi[ok], 0, None)],
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=1,
        )
        ax.plot(x, g["test_kl_mean"], "D", color="black", markersize=6, label="mean KL (analytic)")
        tops = np.fmax(mi + marginal, g["test_kl_mean"].to_numpy(float))
        for i, verdict in enumerate(g.get("information", [""] * len(g))):
            if verdict and verdict != "informative":  # above the bar, clear of the diamond
                ax.annotate(
                    VERDICT_SIGNS[verdict],
                    (x[i], tops[i]),
                    xytext=(0, 7),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    color="#D55E00",
                    fontsize="large",
                    annotation_clip=False,
                )
        ax.set_xticks(x, labels=[f"{v:g}" for v in g["lambda"]])
        ax.set_xlabel("free-bits threshold λ (nats)")
        ax.set_title(label or "all settings", fontsize="medium")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("rate (nats per example)")
    keys = [
        Patch(color=info, label="information I(x;z) (bar: its 95% interval)"),
        Patch(color=hollow, label="marginal KL(q(z)‖p(z)): rate without information"),
        Line2D([], [], marker="D", color="black", linestyle="", label="mean KL (analytic)"),
        Line2D(
            [],
            [],
            marker="$×$",
            color="#D55E00",
            linestyle="",
            markersize=8,
            label="KL without information",
        ),
        Line2D(
            [],
            [],
            marker="$○$",
            color="#D55E00",
            linestyle="",
            markersize=8,
            label="collapsed (KL ≈ 0)",
        ),
    ]
    axes[0].margins(y=0.12)
    outside(axes[-1], keys, name)
    title(fig, "Where the rate goes: information vs marginal KL", inp)
    return fig


def fig_remedies(inp: FigureInput) -> Figure | str:
    """NLL against MI, one marker per remedy (the remedies table's rows), with intervals over
    seeds: the view He et al. 2019 and Li et al. 2019 judge remedies by."""
    import numpy as np
    from matplotlib.figure import Figure

    table = inp.remedies
    if table is None or len(table) < 2:
        return "the runs use one set of remedies: nothing to compare"
    if "test_mi_mean" not in table or not table["test_mi_mean"].notna().any():
        return "no remedy's runs estimated the mutual information"
    iwae = "test_iwae_nll_mean" in table and table["test_iwae_nll_mean"].notna().all()
    if iwae:
        nll, half = table["test_iwae_nll_mean"], table["test_iwae_nll_ci95"]
    else:  # −ELBO, an upper bound on the NLL
        nll, half = -table["test_elbo_mean"], table["test_elbo_ci95"]
    mi = table["test_mi_mean"].to_numpy(float)
    lo, hi = table["test_mi_lo"].to_numpy(float), table["test_mi_hi"].to_numpy(float)
    fig = Figure(figsize=size(7.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for i, (_, row) in enumerate(table.iterrows()):
        colour = f"C{i % 10}"
        xerr = (
            [[max(mi[i] - lo[i], 0.0)], [max(hi[i] - mi[i], 0.0)]] if np.isfinite(lo[i]) else None
        )
        yerr = half.iloc[i] if np.isfinite(half.iloc[i]) else None
        ax.errorbar(
            mi[i],
            nll.iloc[i],
            xerr=xerr,
            yerr=yerr,
            fmt="o",
            color=colour,
            capsize=3,
            label=str(row["remedy"]),
        )
    ax.set_xlabel("mutual information I(x;z) (nats)")
    ax.set_ylabel(("IWAE NLL" if iwae else "−ELBO") + " (nats per example)")
    ax.legend(fontsize="small", loc="best")
    title(fig, "Remedies: NLL against information", inp)
    return fig
