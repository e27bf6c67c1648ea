"""`freebits status`: every run below a results folder, from its files (and submitted job ids)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from freebits_cli import schema

from ..errors import FreebitsError, ResultsError
from .app import app, console, guarded, warn
from .tables import result_rows


@app.command()
def status(
    results_dir: Path = typer.Argument(..., help="Results folder (or one sweep's folder)."),
    json_lines: bool = typer.Option(
        False, "--json", help="One JSON object per run (sweep, run_id, state, epochs, metrics)."
    ),
) -> None:
    """A table of runs: done, failed (with reason), interrupted, pending, queued (submitted)."""

    def body() -> int:
        from freebits_cli.spec.files import build_spec
        from freebits_cli.sweep import executor
        from freebits_cli.sweep.cluster import submitted

        if not results_dir.is_dir():
            raise ResultsError(f"{results_dir}: no such folder")
        sweeps = (
            [results_dir]
            if (results_dir / schema.SPEC_FILE).exists()
            else sorted(p.parent for p in results_dir.glob("*/spec.yaml"))
        )
        if not sweeps:
            raise ResultsError(f"{results_dir}: no sweep found (no */spec.yaml)")
        table = Table(title=f"runs under {results_dir}")
        for column in (
            "sweep",
            "run id",
            "λ",
            "mode",
            "schedule",
            "seed",
            "state",
            "epochs",
            "information",
            "job",
            "reason",
        ):
            table.add_column(column)
        counts: dict[str, int] = {}
        job_lines = []
        for sweep_dir in sweeps:
            try:
                spec = build_spec(sweep_dir / schema.SPEC_FILE)
                plan = executor.plan(spec, sweep_dir.parent)
            except FreebitsError as exc:  # one broken sweep must not hide the others
                warn(f"{sweep_dir.name}: {exc}; its runs are not listed")
                continue
            for warning in plan.warnings:
                warn(warning)
            job_ids, owner = submitted(sweep_dir)
            if job_ids:
                arrays: dict[str, int] = {}
                for job_id in job_ids:  # 123_4 is task 4 of array 123
                    arrays[job_id.split("_")[0]] = arrays.get(job_id.split("_")[0], 0) + 1
                listed = ", ".join(f"{a} ({n} task{'s' * (n > 1)})" for a, n in arrays.items())
                job_lines.append(f"{sweep_dir.name}: submitted as job {listed}")
            for row, item in zip(result_rows(plan), plan.runs, strict=True):
                if row["state"] == "pending" and row["run_id"] in owner:
                    row["state"] = "queued"  # submitted, not started
                state = row["state"].split(" ")[0]
                counts[state] = counts.get(state, 0) + 1
                row["sweep"] = sweep_dir.name
                row["epochs_done"] = _epochs_done(item.folder, row["epochs"])
                row["job"] = owner.get(row["run_id"], "")
                if json_lines:
                    typer.echo(json.dumps(row, default=str))
                    continue
                table.add_row(
                    sweep_dir.name,
                    row["run_id"],
                    f"{row['lambda']:g}",
                    row["mode"],
                    row["anneal"],
                    str(row["seed"]),
                    row["state"],
                    row["epochs_done"],
                    row["information"] or "-",
                    row["job"],
                    row["reason"],
                )
        if json_lines:
            return 0
        console.print(table)
        for line in job_lines:
            console.print(line, highlight=False, soft_wrap=True)
        console.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        return 0

    guarded(body)


def _epochs_done(folder: Path, total: int) -> str:
    """Distinct epochs with a complete row in metrics.csv, out of the run's epochs."""
    from freebits_cli.results import storage

    done = len(set(storage.csv_epochs(folder / schema.METRICS_CSV) or []))
    return f"{done}/{total}"
