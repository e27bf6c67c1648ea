"""`freebits export`: write the runs below a folder to TensorBoard and/or MLflow."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app, console, guarded, warn


@app.command()
def export(
    results_dir: Path = typer.Argument(..., help="Results folder: every run below it is exported."),
    to: list[str] = typer.Option(
        [],
        "--to",
        help="tensorboard[=DIR] (default RESULTS/tensorboard) or mlflow[=URI] (default "
        "sqlite:///RESULTS/mlflow.db); repeat for both.",
    ),
) -> None:
    """Write every run below RESULTS_DIR to TensorBoard and/or MLflow; again adds only what is new."""

    def body() -> int:
        from ..export import export as export_all
        from ..export import parse_targets

        targets = parse_targets(to)
        result = export_all(results_dir, targets, warn)
        for name, where in result.where.items():
            console.print(
                f"{name}: {result.runs} run(s) read; wrote {result.epochs[name]} new run-epoch(s) "
                f"and {result.finished[name]} finished run(s) -> {where}",
                highlight=False,
                soft_wrap=True,
            )
        return 0

    guarded(body)
