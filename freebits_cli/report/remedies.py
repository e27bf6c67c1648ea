"""The comparison a paper prints: one row per remedy (or combination of remedies) in a sweep, at
its best setting, with the decomposition of the rate and intervals over seeds.

Exercise 2's strategies table (`recommend.strategies_table`: baseline / annealing / free bits /
both) generalised to every remedy a run can use (`results.remedies`): pretraining, aggressive
training, β < 1, warm-up, cyclical β, free bits in each mode, BN-VAE, plateau LR decay. Within a
remedy the best setting is the one of highest mean test ELBO over its seeds (ties: the first in
the table's order); a remedy every run of the sweep uses is named once in `attrs["common"]`
instead of in every row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freebits_cli.report.labels import describe, fmt_stat, varying
from freebits_cli.report.stats import metric_range, seed_stats
from freebits_cli.results.remedies import REMEDIES, remedies, remedy_name

if TYPE_CHECKING:
    import pandas as pd

    from freebits_cli.results.reader import Runs

#: What each row shows, mean with a 95% interval over seeds, where the runs have it: the ELBO
#: and the IWAE NLL (the papers' NLL), perplexity for text, the rate and its informative part
#: (MI), active units by both rules, and the probe of z where the data have labels.
SHOWN = (
    "test_elbo",
    "test_iwae_nll",
    "test_ppl",
    "test_kl",
    "test_mi",
    "test_marginal_kl",
    "active_units",
    "active_units_kl",
    "test_probe_accuracy",
)


def remedies_table(runs: Runs) -> pd.DataFrame:
    """One row per (sweep,) remedy: its best setting, how many settings and runs it had, and
    `<metric>_mean`, `_ci95`, `_lo`, `_hi` of each `SHOWN` metric at that setting, plus the most
    common `information` verdict of its seeds where runs have one."""
    import pandas as pd

    table = runs.table[runs.table["state"] == "done"].copy()
    found = {path: remedies(runs.configs.get(path, {})) for path in table["path"]}
    common = tuple(r for r in REMEDIES if found and all(r in f for f in found.values()))
    table["remedy"] = [remedy_name(found[p], common) for p in table["path"]]
    # Plain first, then by how many remedies a row combines, then in `REMEDIES` order.
    table["_order"] = [_order(tuple(r for r in found[p] if r not in common)) for p in table["path"]]
    table = table.sort_values("_order", kind="stable")
    keys = [k for k in runs.keys if k != "sweep"]
    metrics = [m for m in SHOWN if m in table and table[m].notna().any()]
    # Per sweep, only the fields that vary within it: across sweeps everything may differ.
    named = {
        sweep: varying(runs_of, keys)
        for sweep, runs_of in (table.groupby("sweep") if "sweep" in table else [(None, table)])
    }
    rows = []
    by = ["sweep", "remedy"] if "sweep" in table else ["remedy"]
    for group_key, group in table.groupby(by, sort=False):
        settings = []
        for _, seeds in group.groupby(keys, dropna=False, sort=False):
            rec: dict[str, Any] = dict(zip(by, _tuple(group_key), strict=True))
            rec |= {k: seeds[k].iloc[0] for k in keys} | {"n": len(seeds)}
            for m in metrics:
                s = seed_stats(seeds[m], *metric_range(m, seeds["latent_dim"].max()))
                rec |= {f"{m}_mean": s.mean, f"{m}_ci95": s.ci95, f"{m}_lo": s.lo, f"{m}_hi": s.hi}
            if "information" in seeds:
                verdicts = seeds["information"].dropna()
                rec["information"] = verdicts.mode().iloc[0] if len(verdicts) else None
            settings.append(rec)
        best = max(settings, key=lambda r: _finite(r.get("test_elbo_mean")))
        best["setting"] = describe(best, named.get(best.get("sweep"), keys))
        best["settings"], best["runs"] = len(settings), sum(r["n"] for r in settings)
        rows.append(best)
    out = pd.DataFrame(rows).drop(columns="_order", errors="ignore")
    out.attrs["common"] = common
    if out.empty:
        return out
    front = [*by, "setting", "settings", "runs", "n"]
    return out[front + [c for c in out.columns if c not in front]]


#: Column headings of `remedies_markdown`, by metric.
HEADINGS = {
    "test_elbo": "ELBO",
    "test_iwae_nll": "IWAE NLL",
    "test_ppl": "PPL",
    "test_kl": "KL",
    "test_mi": "MI",
    "test_marginal_kl": "marginal KL",
    "active_units": "AU (cov)",
    "active_units_kl": "AU (KL)",
    "test_probe_accuracy": "probe acc.",
}


def remedies_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The table's headings and cells as the page and `remedies_markdown` show them: nats per
    example, mean ± 95% interval over seeds (bounded quantities as mean [lo, hi])."""
    metrics = [m for m in HEADINGS if f"{m}_mean" in table]
    head = ["remedy", "best setting", "runs", *(HEADINGS[m] for m in metrics)]
    head += ["information"] * ("information" in table)
    rows = []
    for _, row in table.iterrows():
        cells = [str(row["remedy"]), str(row["setting"]), str(row["runs"])]
        cells += [fmt_stat(row, m) for m in metrics]
        if "information" in table:
            cells.append(str(row["information"] or "-"))
        rows.append(cells)
    return head, rows


def remedies_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (for a paper draft or a README)."""
    head, rows = remedies_cells(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    common = table.attrs.get("common") or ()
    if common:
        lines.append(f"\nEvery run: {' + '.join(common)}.")
    return "\n".join(lines) + "\n"


def _order(found: tuple[str, ...]) -> tuple[int, tuple[int, ...]]:
    return len(found), tuple(REMEDIES.index(r.split(" (")[0]) for r in found)


def _tuple(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("-inf")
    return number if number == number else float("-inf")
