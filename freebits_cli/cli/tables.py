"""The run tables `sweep` and `status` print: rows read from the run folders, and their layout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer
from rich.table import Table

from freebits_cli import schema

from .app import console, fmt


def print_rows(rows: Sequence[dict[str, Any]], json_lines: bool) -> None:
    if json_lines:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
    else:
        console.print(results_table(rows))


def result_rows(plan: Any) -> list[dict[str, Any]]:
    """One row per run of the plan, from its files; damaged files never count as results."""
    from freebits_cli.results import locks, storage
    from freebits_cli.results.reader import cross_entropy

    rows = []
    for item in plan.runs:
        state = storage.run_state(item.folder, item.run)
        summary = storage.read_summary(item.folder) if state == "done" else None
        failed = storage.read_json(item.folder / schema.FAILED) if state == "failed" else None
        who = locks.holder(item.folder) if state != "done" else None
        numbers = {
            key: value
            for key, value in (summary or {}).items()
            if key in schema.FINAL_METRICS
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        }
        rows.append(
            {
                **numbers,
                "run_id": item.run.run_id,
                "lambda": item.run.free_bits.lam,
                "mode": item.run.free_bits.mode,
                "anneal": item.run.anneal.schedule,
                "seed": item.run.train.seed,
                "state": f"running ({who})" if who else state,
                "reason": str(failed.get("reason", "")) if isinstance(failed, dict) else "",
                "epochs": item.run.train.epochs,
                "cross_entropy": cross_entropy(
                    item.run.model.likelihood, item.run.dataset.binarize
                ),
            }
        )
    return rows


def results_table(rows: Sequence[dict[str, Any]]) -> Table:
    from ..report.labels import CROSS_ENTROPY, NOISE, NOTES, fmt_mi

    table = Table(title="test-set results, nats per example (AU: active units)")
    for column in ("λ", "mode", "anneal", "seed", "ELBO", "KL", "AU", "IWAE NLL", "MI", "state"):
        table.add_column(column, justify="left" if column in ("mode", "anneal") else "right")
    marks = set()
    for r in sorted(rows, key=lambda r: (r["anneal"], r["mode"], r["lambda"], r["seed"])):
        # A Bernoulli decoder on grayscale targets scores a cross-entropy, not a likelihood.
        ce = f" {CROSS_ENTROPY}" if r.get("cross_entropy") else ""
        elbo, iwae = fmt(r.get("test_elbo")), fmt(r.get("test_iwae_nll"))
        mi = fmt_mi(r.get("test_mi"))
        table.add_row(
            f"{r['lambda']:g}",
            r["mode"],
            r["anneal"],
            str(r["seed"]),
            elbo + ce * (elbo != "-"),
            fmt(r.get("test_kl")),
            fmt(r.get("active_units")),
            iwae + ce * (iwae != "-"),
            mi,
            r["state"],
        )
        marks |= {CROSS_ENTROPY} if ce and (elbo, iwae) != ("-", "-") else set()
        marks |= {NOISE} if NOISE in mi else set()
    if marks:
        table.caption = "\n".join(f"{m} {NOTES[m]}" for m in NOTES if m in marks)
        table.caption_justify = "left"
    return table


def plan_table(plan: Any) -> Table:
    table = Table(title="runs")
    extra = [
        p
        for p in plan.grid_paths
        if p not in ("free_bits.lambda", "anneal.schedule", "train.seed", "free_bits.mode")
    ]
    for column in ("run id", "λ", "mode", "schedule", "seed", *extra, "state"):
        table.add_column(column)
    for item in plan.runs:
        run = item.run
        setting = run.setting(extra)
        state = item.state + (f" (epoch {item.start_epoch})" if item.start_epoch else "")
        table.add_row(
            run.run_id,
            f"{run.free_bits.lam:g}",
            run.free_bits.mode,
            run.anneal.schedule,
            str(run.train.seed),
            *(str(setting[p]) for p in extra),
            state,
        )
    return table
