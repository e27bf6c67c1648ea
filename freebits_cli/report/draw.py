"""Draw every figure of the report into its folder: the figures over settings (report.figures)
and those with one mark per run (report.run_figures), in the formats and the style asked for;
one set of figures per sweep when the report covers several (their data sets, models and scales
differ).

Styles are matplotlib style sheets shipped in report/styles/ (default, paper, talk; or the path
of a user's own .mplstyle): sizes, fonts, line widths and PDF font embedding live there, not in
the drawing code, which gives sizes relative to the style (report.figures.size, "small" fonts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli.errors import ResultsError
from freebits_cli.report import run_figures as images
from freebits_cli.report.figures import FigureInput, FigureOutput, _context, fig_elbo, fig_pareto
from freebits_cli.report.info_figures import fig_active_units, fig_rate_split, fig_remedies
from freebits_cli.report.labels import CAPTIONS, MORE_SEEDS, iwae_k

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


STYLES = ("default", "paper", "talk")
STYLE_DIR = Path(__file__).parent / "styles"


def style_sheets(style: str, width: float | None = None) -> list[Any]:
    """The style sheets for `style` (a shipped name or a .mplstyle path), on top of the default
    one; `width` (inches) overrides the width of a one-panel figure, keeping its proportions.
    Raises ResultsError naming an unknown style or a bad width."""
    from matplotlib import rc_params_from_file

    if style in STYLES:
        path = STYLE_DIR / f"{style}.mplstyle"
    elif style.endswith(".mplstyle") and Path(style).expanduser().is_file():
        path = Path(style).expanduser()
    else:
        raise ResultsError(
            f"--style: {style!r} is neither {', '.join(STYLES)} nor an existing .mplstyle file"
        )
    sheets: list[Any] = [STYLE_DIR / "default.mplstyle", path]
    if width is not None:
        if not 0.5 <= width <= 50:
            raise ResultsError(f"--width: {width!r} inches is not between 0.5 and 50")
        styled = rc_params_from_file(path, use_default_template=False)
        base = rc_params_from_file(STYLE_DIR / "default.mplstyle", use_default_template=False)
        w, h = styled.get("figure.figsize", base["figure.figsize"])
        sheets.append({"figure.figsize": (width, width * h / w)})
    return sheets


def draw_report(
    inp: FigureInput,
    out: Path,
    formats: Sequence[str],
    style: str = "default",
    width: float | None = None,
) -> FigureOutput:
    """Every figure, once for the whole report or, over several sweeps, once per sweep (files
    `<sweep>.<figure>.<format>`), each sweep's figures showing its own runs only; in `style`
    (see style_sheets)."""
    from matplotlib.style import context

    with context(style_sheets(style, width)):
        return _draw_report(inp, out, formats)


def _draw_report(inp: FigureInput, out: Path, formats: Sequence[str]) -> FigureOutput:
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
                    remedies=_of_sweep(inp.remedies, sweep),
                    keys=keys,
                    examples=[k for k in inp.examples if k in paths],
                ),
            )
        )
    return parts


def _of_sweep(table: pd.DataFrame | None, sweep: str) -> pd.DataFrame | None:
    if table is None or "sweep" not in table:
        return table
    return table[table["sweep"].astype(str) == sweep]


def draw_all(
    inp: FigureInput, out: Path, formats: Sequence[str], prefix: str = "", group: str = ""
) -> FigureOutput:
    """Draw every figure into `out` in each format (plus PNG for the page if only PDF is asked)."""
    figures: list[tuple[str, Callable[[FigureInput], Figure | str]]] = [
        ("active_units", fig_active_units),
        ("elbo", fig_elbo),
        ("pareto", fig_pareto),
        ("rate_split", fig_rate_split),
        ("remedies", fig_remedies),
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
            if fig:  # "": not a figure of these runs (images of text runs), nothing missing
                result.skipped.append(f"{stem} ({fig})")
            continue
        for fmt in fmts:
            fig.savefig(out / f"{prefix}{stem}.{fmt}")  # dpi, background, bbox: from the style
            result.files.append(out / f"{prefix}{stem}.{fmt}")
        others = [f"{prefix}{stem}.{f}" for f in fmts if f != web]
        result.shown.append((f"{prefix}{stem}.{web}", *caption(stem, inp), others, group))
    return result


#: Figures that draw 95% intervals over seeds (bands or bars).
INTERVAL_FIGURES = ("active_units", "elbo", "pareto")


def caption(stem: str, inp: FigureInput) -> tuple[str, str]:
    """Title and caption of a figure on the page: CAPTIONS[stem], and what this report's runs
    add to it (text runs' likelihoods, settings with one seed)."""
    heading, text = CAPTIONS[stem]
    done = inp.by_setting[inp.by_setting["n"] > 0] if len(inp.by_setting) else inp.by_setting
    ppl = "test_elbo_ppl_mean" in done and bool(done["test_elbo_ppl_mean"].notna().any())
    if stem == "elbo" and (inp.text or ppl):
        text = TEXT_ELBO
    k = iwae_k(inp.runs[inp.runs["test_iwae_nll"].notna()]) if "test_iwae_nll" in inp.runs else ""
    if stem == "elbo" and k:
        text += (
            f" IWAE bound with {k} importance samples (Burda et al. 2015; papers report k = 500 "
            "for text and 5,000 for MNIST, so a smaller k gives a looser bound)."
        )
    if stem in INTERVAL_FIGURES and len(done) and (done["n"] == 1).any():
        text += f" {MORE_SEEDS}"
    return heading, text


TEXT_ELBO = (
    "The price of free bits in likelihood: the true, unclamped ELBO (β = 1) per sentence; beside "
    "it the importance-weighted NLL when runs computed one, and the test perplexity, exp(NLL per "
    "predicted token, </s> included)."
)
