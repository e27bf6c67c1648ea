"""Words for the report: number and setting formatting, the terminal table rows, and index.html.

The page is one self-contained file (inline CSS, images referenced by relative name), so the report
folder can be copied anywhere and opened offline.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from freebits_cli.report.figures import FigureOutput
    from freebits_cli.results.reader import Runs

from freebits_cli import schema
from freebits_cli.report.labels import (
    CROSS_ENTROPY,
    LABELS,
    LIKELIHOOD_METRICS,
    MORE_SEEDS,
    NOTES,
    by_setting_rows,
    describe,
    fmt_mi,
    fmt_pm,
    fmt_stat,
    fmt_value,
    iwae_k,
    short_label,
    table_notes,
    varying,
    with_k,
)
from freebits_cli.report.remedies import remedies_cells

__all__ = ["by_setting_rows", "describe", "fmt_pm", "fmt_value", "short_label", "varying"]
__all__ += ["LABELS", "table_notes", "write_index"]


def _cell(value: Any) -> str:
    text = html.escape(str(value))
    # Numbers right-aligned (tabular figures line up); words left-aligned.
    return f'<td class="n">{text}</td>' if re.match(r"^[-+]?\d|^-$", text) else f"<td>{text}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(anchor: str, heading: str, body: str, note: str = "", below: bool = False) -> str:
    note = f'<p class="meta">{note}</p>' if note else ""
    inner = body + note if below else note + body
    return f'<h2 id="{anchor}">{html.escape(heading)}</h2>{inner}'


def _run_rows(table: pd.DataFrame, state: str, keys: Sequence[str]) -> list[list[str]]:
    rows = []
    for _, r in table[table["state"] == state].iterrows():
        epochs = f"{fmt_value(r['epochs_done'])} / {fmt_value(r['epochs'])}"
        cells = [r["run_id"], describe(r, keys), fmt_value(r["seed"])]
        last = [fmt_value(r["failed_epoch"]), str(r["failed_reason"])] if state == "failed" else []
        rows.append([*cells, epochs, *last])
    return rows


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:0;
background:#f3f3f3}main{max-width:1240px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #ddd;
padding-bottom:4px}.meta{color:#555;margin:4px 0 10px}code,pre{font:13px/1.45 ui-monospace,Menlo,
Consolas,monospace}pre{background:#f4f4f4;padding:12px;overflow:auto;border-radius:6px}
nav{margin:14px 0;font-size:14px}nav a{margin-right:14px}a{color:#0b5cad}
.tiles{display:flex;gap:12px;flex-wrap:wrap}.tile{border:1px solid #ccc;border-radius:8px;
padding:8px 18px;min-width:110px}.tile b{display:block;font-size:28px}.failed b{color:#b00020}
.rec{background:#eef5ff;border-left:5px solid #0b5cad;padding:12px 18px;font-size:16px}
.warn{background:#fff6e5;border-left:5px solid #b36b00;padding:6px 18px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e2e2e2;padding:5px 10px;text-align:left;white-space:nowrap}
td.n{text-align:right}th{background:#ececec;position:sticky;top:0}
tbody tr:nth-child(even){background:#f7f7f7}
.scroll{max-height:560px;overflow:auto;border:1px solid #e2e2e2;display:inline-block;max-width:100%}
figure{margin:18px 0 34px}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{color:#333;max-width:1000px;margin-top:6px}summary{cursor:pointer;font-weight:600}
table.sentences{width:100%;table-layout:fixed}table.sentences td,table.sentences th{
white-space:normal;overflow-wrap:anywhere}details.setting{margin:10px 0 18px}
"""


def write_index(
    out: Path,
    results_dir: Path,
    runs: Runs,
    csvs: Mapping[str, pd.DataFrame],
    recommendation: str,
    figures: FigureOutput,
    keep_share: float,
    sentences: str = "",
) -> Path:
    """Write out/index.html: counts, recommendation, problems, tables, figures and specs."""
    esc = html.escape
    table, counts, by_setting = runs.table, runs.counts(), csvs[schema.BY_SETTING_CSV]
    sweeps = ", ".join(sorted(table["sweep"].astype(str).unique()))
    keys = varying(by_setting, runs.keys) if len(by_setting) else ["lambda", "anneal"]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    tiles = [("done", counts["done"]), ("failed", counts["failed"])]
    tiles += [("running or interrupted", counts["incomplete"]), ("total", len(table))]
    parts = [
        f"<h1>freebits report: {esc(sweeps)}</h1>",
        f'<p class="meta">{len(table)} runs read from <code>{esc(str(results_dir))}</code> on '
        f"{stamp}. All numbers are in nats per test example.</p>",
        '<div class="tiles">'
        + "".join(f'<div class="tile {name * bool(n)}"><b>{n}</b>{name}</div>' for name, n in tiles)
        + "</div>",
        "<nav>" + " ".join(f'<a href="#{a}">{t}</a>' for a, t in NAV) + "</nav>",
        _section(
            "recommendation",
            "Recommendation",
            f'<p class="rec">{esc(recommendation)}</p>',
            f"Target: at least {keep_share:.0%} of the latent units active (Burda et al. "
            f"2015). {STATS_NOTE}",
            below=True,
        ),
    ]
    problems = runs.warnings + figures.warnings
    if problems:
        items = "".join(f"<li><code>{esc(w)}</code></li>" for w in problems[:100])
        items += f"<li>… and {len(problems) - 100} more</li>" if len(problems) > 100 else ""
        body = f'<div class="warn"><ul>{items}</ul></div>'
        parts.append(_section("problems", f"Problems in the files ({len(problems)})", body))
    if counts["failed"]:
        head = ["run", "setting", "seed", "epochs", "failed at epoch", "reason"]
        body = _table(head, _run_rows(table, "failed", keys))
        parts.append(_section("failed", f"Failed runs ({counts['failed']})", body))
    if counts["incomplete"]:
        head = ["run", "setting", "seed", "epochs done / planned"]
        body = _table(head, _run_rows(table, "incomplete", keys))
        parts.append(
            _section(
                "running",
                f"Running or interrupted ({counts['incomplete']})",
                body,
                "No summary.json yet: still training, or stopped before the end.",
            )
        )
    parts.append(
        _section(
            "by-setting",
            "Results by setting",
            _by_setting_tables(by_setting) + _notes(table_notes(by_setting)),
            f"Finished runs only. {STATS_NOTE} Every statistic: "
            '<a href="by_setting.csv">by_setting.csv</a>.',
        )
    )
    parts += [
        _strategies(csvs[schema.STRATEGIES_CSV], sweep_keys(by_setting, runs.keys)),
        _pareto(csvs[schema.PARETO_CSV], sweep_keys(by_setting, runs.keys)),
        _remedies(csvs[schema.REMEDIES_CSV]),
    ]
    parts.append(_figures(figures))
    if sentences:
        parts.append(
            _section(
                "sentences",
                "Sentences",
                sentences,
                "Text runs: one block per setting (lowest seed), the same test sentences and prior "
                "draws in every run, decoded greedily (and by sampling where the run saved it).",
            )
        )
    parts.append(_all_runs(csvs[schema.SUMMARY_CSV], runs.keys))
    for i, (sweep, text) in enumerate(sorted(runs.specs.items())):
        parts.append(
            _section("spec" if i == 0 else f"spec-{i}", f"Spec of sweep {sweep}", _spec(text))
        )
    if not runs.specs:
        parts.append(_section("spec", "Spec", "<p>No spec.yaml found beside the runs.</p>"))
    links = " · ".join(f'<a href="{n}">{n}</a>' for n in csvs)
    parts.append(_section("tables", "Tables", f"<p>{links}</p>"))
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>freebits report: '
        f'{esc(sweeps)}</title><meta name="viewport" content="width=device-width">'
        f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n"
    )
    path = out / schema.INDEX_HTML
    path.write_text(page, encoding="utf-8")
    return path


STATS_NOTE = (
    "Means over seeds ± the half-width of the 95% Student-t interval; for quantities with a "
    "range (active units in [0, D], KL and MI ≥ 0) the interval as [low, high], clipped to it."
)


def spec_changes(text: str) -> list[tuple[str, str, str]] | None:
    """(field, value, default) of each field of a resolved spec.yaml that differs from the
    defaults (SweepSpec()), the grid first; None when the text is not a spec mapping."""
    import yaml

    from freebits_cli.spec.config import SweepSpec

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(tree, dict):
        return None
    defaults = _flat(SweepSpec().to_dict())
    rows = [("grid", _yaml(tree.get("grid")), _yaml(defaults.get("grid")))]
    rows = rows if tree.get("grid") != SweepSpec().to_dict()["grid"] else []
    for path, value in _flat({k: v for k, v in tree.items() if k != "grid"}).items():
        if path not in defaults or defaults[path] != value:
            rows.append((path, _yaml(value), _yaml(defaults.get(path, "(no default)"))))
    return rows


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "grid" and key != "kwargs":
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _yaml(value: Any) -> str:
    import yaml

    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _spec(text: str) -> str:
    """A sweep's spec: the fields that differ from the defaults as a table, the whole resolved
    spec.yaml folded below it (every field is there, most at their defaults)."""
    esc = html.escape
    folded = f"<details><summary>the whole spec.yaml</summary><pre>{esc(text)}</pre></details>"
    changes = spec_changes(text)
    if changes is None:
        return f"<details open><summary>spec.yaml</summary><pre>{esc(text)}</pre></details>"
    if not changes:
        return "<p>Every field at its default.</p>" + folded
    table = _table(["field", "value", "default"], changes)
    return f'<p class="meta">Fields that differ from the defaults:</p>{table}{folded}'


def _notes(notes: Sequence[str]) -> str:
    return "".join(f'<p class="meta">{html.escape(n)}</p>' for n in notes)


NAV = (("recommendation", "Recommendation"), ("by-setting", "By setting"))
NAV += (("strategies", "Strategies"), ("pareto", "Pareto front"), ("remedies", "Remedies"))
NAV += (("figures", "Figures"),)
NAV += (("runs", "All runs"), ("spec", "Spec"), ("tables", "CSV files"))


def _figures(figures: FigureOutput) -> str:
    esc, parts, heading = html.escape, [], ""
    for name, title, caption, others, group in figures.shown:
        if group != heading:  # several sweeps: each its own figures
            heading = group
            anchor = esc(name.rsplit(".", 2)[0])
            parts.append(f'<h3 id="figures-{anchor}">Figures of {esc(group)}</h3>')
        links = " · ".join(f'<a href="{esc(o)}">{esc(o.rsplit(".", 1)[1])}</a>' for o in others)
        parts.append(
            f'<figure id="{esc(name.rsplit(".", 1)[0])}"><img src="{esc(name)}" '
            f'alt="{esc(title)}" loading="lazy"><figcaption><b>{esc(title)}.</b> '
            f"{esc(caption)}{' Also as ' + links + '.' if links else ''}</figcaption></figure>"
        )
    note = f"Not drawn: {esc('; '.join(figures.skipped))}." if figures.skipped else ""
    return _section("figures", "Figures", "".join(parts), note)


def _all_runs(summary: pd.DataFrame, keys: Sequence[str]) -> str:
    cols = ["run_id", "state", *keys, "seed", "epochs_done", "test_elbo", "test_kl", "active_units"]
    optional = ("active_units_kl", "information", "test_mi", "test_mi_lo", "test_mi_hi")
    optional += ("test_marginal_kl", "test_probe_accuracy", "test_iwae_nll", "test_bits_per_dim")
    optional += ("test_iwae_bits_per_dim", "test_ppl", "seconds", PACK_SECONDS)
    for extra in optional:
        if extra in summary and summary[extra].notna().any() and (summary[extra] != "").any():
            cols.append(extra)
    ce = summary["cross_entropy"].astype(bool) if "cross_entropy" in summary else None
    rows = []
    for i, r in enumerate(summary[cols].itertuples(index=False)):
        cells = []
        for col, v in zip(cols, r, strict=True):
            cell = (
                fmt_mi(v)
                if col == "test_mi"
                else fmt_value(round(v, 3) if isinstance(v, float) else v)
            )
            if ce is not None and ce.iloc[i] and col in LIKELIHOOD_METRICS and cell != "-":
                cell += f" {CROSS_ENTROPY}"
            cells.append(cell)
        rows.append(cells)
    notes = [f"{m} {NOTES[m]}" for m in NOTES if any(m in c for row in rows for c in row)]
    body = (
        f'<details><summary>{len(summary)} runs</summary><div class="scroll">'
        f"{_table([_run_header(c, summary) for c in cols], rows)}</div>{_notes(notes)}</details>"
    )
    return _section("runs", "All runs", body, 'Also as <a href="summary.csv">summary.csv</a>.')


PACK_SECONDS = schema.PACK_SECONDS
RUN_HEADERS = {
    "active_units": "AU (cov.)",
    "active_units_kl": "AU (KL)",
    "seconds": "seconds (run's share)",
    PACK_SECONDS: "seconds (its pack)",
}


def _run_header(col: str, summary: pd.DataFrame) -> str:
    """A column of the all-runs table: setting labels by name, IWAE numbers with their k."""
    return with_k(RUN_HEADERS.get(col, LABELS.get(col, col)), col, iwae_k(summary))


def _by_setting_tables(by_setting: pd.DataFrame) -> str:
    """The by-setting table; over several sweeps one per sweep, each with the setting columns
    that vary within it (fields that differ only between sweeps made every row ~20 columns
    wider)."""
    if "sweep" not in by_setting or by_setting["sweep"].nunique() < 2:
        return f'<div class="scroll">{_table(*by_setting_rows(by_setting))}</div>'
    parts = []
    for sweep, group in by_setting.groupby("sweep", sort=False):
        headers, rows = by_setting_rows(group.drop(columns="sweep"))
        parts.append(
            f"<h3>Sweep {html.escape(str(sweep))}</h3>"
            f'<div class="scroll">{_table(headers, rows)}</div>'
        )
    return "".join(parts)


def sweep_keys(by_setting: pd.DataFrame, keys: Sequence[str]) -> dict[Any, list[str]]:
    """Sweep (None for a one-sweep report) -> the setting columns worth naming in it: λ and
    schedule, and the others only where they vary within that sweep."""
    rest = [k for k in keys if k != "sweep"]
    if "sweep" not in keys or not len(by_setting):
        return {None: varying(by_setting, rest) if len(by_setting) else ["lambda", "anneal"]}
    return {s: varying(g, rest) for s, g in by_setting.groupby("sweep", sort=False)}


def _keys_of(row: pd.Series, keys: Mapping[Any, list[str]]) -> list[str]:
    return keys.get(row.get("sweep"), keys.get(None, ["lambda", "anneal"]))


def _strategies(df: pd.DataFrame, keys: Mapping[Any, list[str]]) -> str:
    head = ["sweep"] * (None not in keys)
    head += ["strategy", "best setting", "settings", "runs", "n", "best ELBO (nats)", "AU (cov.)"]
    rows = [
        [
            *([r["sweep"]] if None not in keys else []),
            r["strategy"],
            short_label(r, _keys_of(r, keys)),  # short cells: "λ=0.5 · linear"
            r["settings"],
            r["runs"],
            r["n"],
            fmt_pm(r["test_elbo_mean"], r["test_elbo_ci95"], n=r["n"]),
            fmt_pm(r["active_units_mean"], None, 1),  # the mean of the best setting
        ]
        for _, r in df.iterrows()
    ]
    note = (
        "Baseline: λ = 0, no annealing; annealing only: λ = 0; free bits only: λ > 0, no "
        'annealing; both: λ > 0 and annealing. <a href="strategies.csv">strategies.csv</a>'
    )
    body = _table(head, rows) if rows else "<p>No finished run yet.</p>"
    body += _notes([MORE_SEEDS] if (df["n"] == 1).any() else [])
    return _section("strategies", "Best ELBO per strategy", body, note)


def _remedies(df: pd.DataFrame) -> str:
    """The recipes against posterior collapse the sweep ran, one row each at its best setting."""
    common = " + ".join(df.attrs.get("common") or ()) or "none"
    if len(df) < 2:
        body = (
            f"<p>Every finished run uses the same remedies ({html.escape(common)}): grid over "
            "<code>pretrain.epochs</code>, <code>train.aggressive</code>, "
            "<code>anneal.schedule: constant</code>, <code>model.mu_bn_gamma</code> or "
            "<code>train.lr_decay</code> to compare them (<code>configs/remedies.yaml</code>).</p>"
        )
        return _section("remedies", "Remedies compared", body)
    head, rows = remedies_cells(df)
    body = _table(head, rows) + _notes([MORE_SEEDS] if (df["n"] == 1).any() else [])
    note = (
        "Each remedy (or combination) at its setting of best mean test ELBO, mean ± 95% interval "
        f"over seeds; used by every run: {html.escape(common)}. "
        '<a href="remedies.csv">remedies.csv</a>'
    )
    return _section("remedies", "Remedies compared", body, note)


def _pareto(df: pd.DataFrame, keys: Mapping[Any, list[str]]) -> str:
    head = ["sweep"] * (None not in keys) + [
        "setting",
        "n",
        "ELBO (nats)",
        "active units",
        "share active",
        "",
    ]
    rows = [
        [
            *([r["sweep"]] if None not in keys else []),
            short_label(r, _keys_of(r, keys)),
            r["n"],
            fmt_pm(r["test_elbo_mean"], r["test_elbo_ci95"], n=r["n"]),
            fmt_stat(r, "active_units", 1),
            "-" if math.isnan(r["active_share_mean"]) else f"{r['active_share_mean']:.0%}",
            "recommended" if r["recommended"] else "",
        ]
        for _, r in df.iterrows()
    ]
    note = (
        "Settings no other setting beats on both the mean ELBO and the mean number of active "
        'units. <a href="pareto.csv">pareto.csv</a>'
    )
    body = _table(head, rows) if rows else "<p>No finished run yet.</p>"
    body += _notes([MORE_SEEDS] if (df["n"] == 1).any() else [])
    return _section("pareto", "Pareto front: ELBO vs active units", body, note)
