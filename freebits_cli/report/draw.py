"""Draw every figure of the report into its folder: the figures over settings (report.figures)
and those with one mark per run (report.run_figures), in the formats asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from freebits_cli.report import run_figures as images
from freebits_cli.report.figures import (
    CAPTIONS,
    FigureInput,
    FigureOutput,
    _context,
    fig_active_units,
    fig_elbo,
    fig_pareto,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def draw_all(inp: FigureInput, out: Path, formats: Sequence[str]) -> FigureOutput:
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
            (out / f"{stem}.{fmt}").unlink(missing_ok=True)
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
            fig.savefig(out / f"{stem}.{fmt}", dpi=130, facecolor="white")
            result.files.append(out / f"{stem}.{fmt}")
        others = [f"{stem}.{f}" for f in fmts if f != web]
        result.shown.append((f"{stem}.{web}", *CAPTIONS[stem], others))
    return result
