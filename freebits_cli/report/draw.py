"""Draw every figure of the report into its folder: the figures over settings (report.figures)
and those with one mark per run (report.run_figures), in the formats asked for; one set of
figures per sweep when the report covers several (their data sets, models and scales differ)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from freebits_cli.report import run_figures as images
from freebits_cli.report.figures import (
    FigureInput,
    FigureOutput,
    _context,
    fig_active_units,
    fig_elbo,
    fig_pareto,
)
from freebits_cli.report.labels import CAPTIONS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def draw_report(inp: FigureInput, out: Path, formats: Sequence[str]) -> FigureOutput:
    """Every figure, once for the whole report or, over several sweeps, once per sweep (files
    `<sweep>.<figure>.<format>`), each sweep's figures showing its own runs only."""
    if "sweep" not in inp.keys:
        return draw_all(inp, out, formats)
    result = FigureOutput()
    for sweep, part in per_sweep(inp):
        drawn = draw_all(part, out, formats, prefix=f"{sweep}.", group=f"sweep {sweep}")
        result.files += drawn.files
        result.shown += drawn.shown
        result.skipped += [f"{sweep}: {s}" for s in drawn.skipped]
        result.warnings += [f"sweep {sweep}: {w}" for w in drawn.warnings]
    return result


def per_sweep(inp: FigureInput) -> list[tuple[str, FigureInput]]:
    """The figure input of each sweep, in the order of the by-setting table."""
    keys = [k for k in inp.keys if k != "sweep"]
    parts = []
    for sweep in dict.fromkeys(inp.runs["sweep"].astype(str)):
        runs = inp.runs[inp.runs["sweep"].astype(str) == sweep]
        paths = set(runs["path"])
        parts.append(
            (
                sweep,
                replace(
                    inp,
                    runs=runs,
                    by_setting=inp.by_setting[inp.by_setting["sweep"].astype(str) == sweep],
                    pareto=inp.pareto[inp.pareto["sweep"].astype(str) == sweep],
                    keys=keys,
                    examples=[k for k in inp.examples if k in paths],
                ),
            )
        )
    return parts


def draw_all(
    inp: FigureInput, out: Path, formats: Sequence[str], prefix: str = "", group: str = ""
) -> FigureOutput:
    """Draw every figure into `out` in each format (plus PNG for the page if only PDF is asked)."""
    figures: list[tuple[str, Callable[[FigureInput], Figure | str]]] = [
        ("active_units", fig_active_units),
        ("elbo", fig_elbo),
        ("pareto", fig_pareto),
        ("rate_distortion", images.fig_rate_distortion),
        ("kl_per_dim", images.fig_kl_per_dim),
        ("kl_trajectories", images.fig_kl_trajectories),
        ("curves", images.fig_curves),
        ("reconstructions", images.fig_reconstructions),
        ("samples", images.fig_samples),
    ]
    inp.context = _context(inp)
    result = FigureOutput()
    web = next((f for f in ("png", "svg") if f in formats), "png")  # browsers cannot show PDF
    fmts = list(dict.fromkeys([*formats, web]))
    for stem, *_ in figures:  # a figure not drawn this time must not show last time's picture
        for fmt in ("png", "svg", "pdf"):
            (out / f"{prefix}{stem}.{fmt}").unlink(missing_ok=True)
    for stem, draw in figures:
        try:
            fig = draw(inp)
        except Exception as exc:  # one odd file must not take the whole report down
            result.warnings.append(f"{stem}: figure not drawn ({type(exc).__name__}: {exc})")
            continue
        if isinstance(fig, str):
            result.skipped.append(f"{stem} ({fig})")
            continue
        for fmt in fmts:
            fig.savefig(out / f"{prefix}{stem}.{fmt}", dpi=130, facecolor="white")
            result.files.append(out / f"{prefix}{stem}.{fmt}")
        others = [f"{prefix}{stem}.{f}" for f in fmts if f != web]
        result.shown.append((f"{prefix}{stem}.{web}", *CAPTIONS[stem], others, group))
    return result
