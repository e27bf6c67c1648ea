"""`freebits report`: figures, tables and index.html from the files of every run below a folder."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from .app import app, console, guarded, warn


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="Results folder: every run below it is reported."),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder (default RESULTS_DIR/report)."
    ),
    formats: str = typer.Option("png", "--format", help="Figure formats: png,svg,pdf."),
    keep_share: float = typer.Option(
        0.9, "--keep-share", help="Share of units to keep active for the λ recommendation."
    ),
    style: str = typer.Option(
        "default",
        "--style",
        help="Figure style: default (screen), paper (one 3.25 in column, 8 pt serif, TrueType "
        "fonts in PDF), talk (slides), or a .mplstyle file.",
    ),
    width: float | None = typer.Option(
        None, "--width", help="Width of a one-panel figure in inches (default: the style's)."
    ),
) -> None:
    """Figures, tables and index.html from the files of every run below RESULTS_DIR."""

    def body() -> int:
        from ..report import build_report, by_setting_rows
        from ..report.html import table_notes

        started = time.perf_counter()
        fmt_list = [f.strip() for f in formats.split(",") if f.strip()]
        result = build_report(results_dir, out, fmt_list, keep_share, style, width)
        for warning in result.warnings:
            warn(warning)
        headers, rows = by_setting_rows(result.by_setting)
        notes = "\n".join(table_notes(result.by_setting))
        table = Table(
            title="by setting (mean ± 95% CI over seeds, nats; [low, high]: clipped to the range)",
            caption=notes or None,
            caption_justify="left",
        )
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print(result.recommendation, highlight=False)
        counts = ", ".join(f"{n} {state}" for state, n in result.counts.items())
        console.print(
            f"{counts}; report written in {time.perf_counter() - started:.1f} s: "
            f"{result.index_html}",
            highlight=False,
            soft_wrap=True,
        )
        return 0

    guarded(body, "interrupted; no new report written, the previous one is left as it was")
