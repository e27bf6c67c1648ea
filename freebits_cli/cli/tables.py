"""The run tables `sweep` and `status` print: rows read from the run folders, and their layout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

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
        verdict = (summary or {}).get("information")
        rows.append(
            {
                **numbers,
                "information": verdict if isinstance(verdict, str) else "",
                "run_id": item.run.run_id,
                "lambda": item.run.free_bits.lam,
                "mode": item.run.free_bits.mode,
                "anneal": item.run.anneal.schedule,
                "seed": item.run.train.seed,
                "state": f"running ({who})" if who else state,
                "reason": str(failed.get("reason", "")) if isinstance(failed, dict) else "",
                "epochs": item.run.train.epochs,
                "au_threshold": item.run.eval.au_threshold,
                "kl_threshold": item.run.eval.kl_threshold,
                "cross_entropy": cross_entropy(
                    item.run.model.likelihood, item.run.dataset.binarize
                ),
            }
        )
    return rows


#: The results table's columns; text columns are left-aligned.
RESULT_COLUMNS = (
    "λ",
    "mode",
    "anneal",
    "seed",
    "ELBO",
    "KL",
    "AU cov",
    "AU KL",
    "IWAE NLL",
    "MI [95%]",
    "marg. KL",
    "probe",
    "information",
    "state",
)
TEXT_RESULT_COLUMNS = ("mode", "anneal", "information")


def fmt_interval(value: Any, lo: Any, hi: Any) -> str:
    """The MI and its interval over draws, e.g. `0.16 [0.06, 0.27]` (no interval: one draw)."""
    from ..report.labels import fmt_mi

    mi = fmt_mi(value)
    if not all(isinstance(v, int | float) and v == v for v in (lo, hi)):
        return mi
    return f"{mi} [{lo:.2f}, {hi:.2f}]"


def results_table(rows: Sequence[dict[str, Any]]) -> Table:
    from ..report.labels import CROSS_ENTROPY, NOISE, NOTES

    table = Table(title="test-set results, nats per example (AU: active units)")
    for column in RESULT_COLUMNS:
        table.add_column(column, justify="left" if column in TEXT_RESULT_COLUMNS else "right")
    marks = set()
    for r in sorted(rows, key=lambda r: (r["anneal"], r["mode"], r["lambda"], r["seed"])):
        # A Bernoulli decoder on grayscale targets scores a cross-entropy, not a likelihood.
        ce = f" {CROSS_ENTROPY}" if r.get("cross_entropy") else ""
        elbo, iwae = fmt(r.get("test_elbo")), fmt(r.get("test_iwae_nll"))
        mi = fmt_interval(r.get("test_mi"), r.get("test_mi_lo"), r.get("test_mi_hi"))
        table.add_row(
            f"{r['lambda']:g}",
            r["mode"],
            r["anneal"],
            str(r["seed"]),
            elbo + ce * (elbo != "-"),
            fmt(r.get("test_kl")),
            fmt(r.get("active_units")),
            fmt(r.get("active_units_kl")),
            iwae + ce * (iwae != "-"),
            mi,
            fmt(r.get("test_marginal_kl")),
            fmt(r.get("test_probe_accuracy")),
            r.get("information") or "-",
            r["state"],
        )
        marks |= {CROSS_ENTROPY} if ce and (elbo, iwae) != ("-", "-") else set()
        marks |= {NOISE} if NOISE in mi else set()
    lines = [f"{m} {NOTES[m]}" for m in NOTES if m in marks]
    table.caption = Text("\n".join([*au_rules(rows), *lines]))  # plain text: `[z_j|x]` as written
    table.caption_justify = "left"
    return table


def au_rules(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The caption lines that define both active-unit rules (with the runs' thresholds), the MI's
    interval, the marginal KL and the verdict, so a gap between the two AU columns reads right."""
    deltas = sorted({r["au_threshold"] for r in rows if "au_threshold" in r})
    epsilons = sorted({r["kl_threshold"] for r in rows if "kl_threshold" in r})
    delta = "/".join(f"{d:g}" for d in deltas) or "δ"
    epsilon = "/".join(f"{e:g}" for e in epsilons) or "ε"
    return [
        f"AU cov: units whose posterior mean varies with x, Cov_x(E_q[z_j|x]) > {delta} "
        "(Burda et al. 2015); AU KL: units whose mean KL exceeds "
        f"{epsilon} nats, met as well by posteriors moved off the prior alike for every x",
        "MI [95%]: I(x;z), mean and interval over independent draws; marg. KL: KL(q(z)‖p(z)), "
        "the rate that carries no information (MI + marg. KL ≈ KL); probe: test accuracy of a "
        "logistic regression on the codes (data with labels)",
    ]


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
