"""`freebits report`: read the files runs wrote; write tables, figures and one index.html.

Reads only files (never torch, never retrains), so it works on a sweep that is still running or
has failed runs. This module: statistics across seeds, strategies, recommendation, orchestration.
Reading files: report.load; figures: report.figures; the page and text formatting: report.html.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli.errors import ResultsError
from freebits_cli.report.html import (
    by_setting_rows,
    describe,
    fmt_pm,
    fmt_value,
    varying,
    write_index,
)
from freebits_cli.report.labels import short_label
from freebits_cli.report.load import (
    Runs,
    find_run_dirs,
    read_kl_history,
    read_results,
    read_samples,
    read_sentences,
)
from freebits_cli.report.sentences import sentences_html

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportResult", "build_report", "by_setting_rows", "find_run_dirs", "t975"]

FORMATS = ("png", "svg", "pdf")
METRICS = ("test_elbo", "test_recon", "test_kl", "active_units", "active_share")
METRICS += ("active_units_kl", "test_iwae_nll", "test_mi", "seconds")
METRICS += ("test_bits_per_dim", "test_iwae_bits_per_dim", "test_ppl", "test_elbo_ppl")
STRATEGIES = ("baseline", "annealing only", "free bits only", "both")  # seed text, Exercise 2
# Student-t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95% CI across seeds).
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004)
T975 += (2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905)
T975 += (2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899)
T975 += (2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)


@dataclass(frozen=True)
class ReportResult:
    """What `build_report` wrote, and what the CLI prints."""

    out_dir: Path  # folder holding every file of the report
    index_html: Path  # the page showing everything; opens offline
    by_setting: pd.DataFrame  # = by_setting.csv; `by_setting_rows` formats it for a Rich table
    recommendation: str  # recommended λ and the ELBO/active-units Pareto front, in words
    counts: dict[str, int]  # runs per state: done, failed, incomplete
    warnings: tuple[str, ...]  # one line per problem found in the files
    files: tuple[Path, ...]  # every file written


def t975(dof: int) -> float:
    """Two-sided 95% Student-t quantile; Cornish-Fisher expansion past the table (error < 1e-5)."""
    if dof <= len(T975):
        return T975[dof - 1]
    z = 1.959964  # Abramowitz & Stegun 26.7.5: t ≈ z + g1/ν + g2/ν² + g3/ν³
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3


def seed_stats(values: Any) -> tuple[float, float, float, int]:
    """(mean, sample std (ddof=1), 95% CI half-width t·s/√n, n) of the finite values."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan, 0
    if len(x) == 1:
        return float(x[0]), math.nan, math.nan, 1
    std = float(x.std(ddof=1))
    return float(x.mean()), std, t975(len(x) - 1) * std / math.sqrt(len(x)), len(x)


def parse_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """Accept ("png", "svg") or "png,svg"; raise ResultsError naming an unknown format."""
    items = [formats] if isinstance(formats, str) else list(formats)
    names = [n.strip().lower().lstrip(".") for item in items for n in str(item).split(",")]
    for name in names:
        if name and name not in FORMATS:
            raise ResultsError(f"--format: unknown figure format {name!r} (use png, svg or pdf)")
    out = tuple(dict.fromkeys(n for n in names if n))
    if not out:
        raise ResultsError("--format: no figure format given (use png, svg or pdf)")
    return out


def _sortable(col: pd.Series) -> pd.Series:
    import pandas as pd

    return col if pd.api.types.is_numeric_dtype(col) else col.astype(str)


def by_setting_table(runs: Runs) -> pd.DataFrame:
    """One row per setting (all but the seed): n done runs; mean, std (ddof=1), 95% CI of each."""
    import pandas as pd

    table, keys = runs.table, runs.keys
    finished = table[table["state"] == "done"]
    core = ("test_elbo", "test_recon", "test_kl", "active_units", "active_share")
    metrics = [m for m in METRICS if m in core or finished[m].notna().any()]
    records = []
    for _, group in table.groupby(keys, dropna=False, sort=False):
        done = group[group["state"] == "done"]
        rec: dict[str, Any] = {k: group[k].iloc[0] for k in keys}
        rec |= {"strategy": group["strategy"].iloc[0], "n": len(done)}
        rec["n_failed"] = int((group["state"] == "failed").sum())
        rec["n_incomplete"] = int((group["state"] == "incomplete").sum())
        rec["n_damaged"] = int(((group["state"] == "incomplete") & group["summary_damaged"]).sum())
        rec["seeds"] = ",".join(str(int(x)) for x in sorted(done["seed"].dropna()))
        rec["latent_dim"] = group["latent_dim"].max()
        # One run per setting (the lowest seed) for the figures that show single runs.
        rec["_example"] = done.sort_values("seed")["path"].iloc[0] if len(done) else None
        for m in metrics:
            mean, std, ci, _ = seed_stats(done[m])
            rec |= {f"{m}_mean": mean, f"{m}_std": std, f"{m}_ci95": ci}
        records.append(rec)
    df = pd.DataFrame(records)
    # Each schedule's rows together, "none" first, λ ascending within: how the figures read.
    df["_annealed"] = df["anneal"].astype(str) != "none"
    order = [k for k in keys if k == "sweep"] + ["_annealed", "anneal", "free_bits_mode"]
    order += [k for k in keys if "." in k] + ["lambda"]
    df = df.sort_values(order, key=_sortable, kind="stable").drop(columns="_annealed")
    return df.reset_index(drop=True)


def strategies_table(by_setting: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Best test ELBO per strategy (baseline / annealing only / free bits only / both)."""
    import pandas as pd

    ok = by_setting[(by_setting["n"] > 0) & by_setting["test_elbo_mean"].notna()]
    shown = ["n", "test_elbo_mean", "test_elbo_std", "test_elbo_ci95", "active_units_mean"]
    shown += [c for c in ("test_kl_mean", "test_iwae_nll_mean") if c in ok]
    rows = []
    for sweep, group in ok.groupby("sweep", sort=False) if "sweep" in keys else [(None, ok)]:
        for name in STRATEGIES:
            same = group[group["strategy"] == name]
            if same.empty:
                continue
            best = same.loc[same["test_elbo_mean"].idxmax()]  # ties: the smaller λ (sorted)
            rec = {"sweep": sweep} if sweep is not None else {}
            rec |= {"strategy": name, "settings": len(same), "runs": int(same["n"].sum())}
            rows.append(rec | {k: best[k] for k in keys if k != "sweep"} | best[shown].to_dict())
    columns = ["sweep"] * ("sweep" in keys) + ["strategy", "settings", "runs"]
    return pd.DataFrame(rows, columns=columns + [k for k in keys if k != "sweep"] + shown)


def pareto_mask(elbo: Sequence[float], active: Sequence[float]) -> list[bool]:
    """True for settings no other setting beats on both ELBO and active units (≥ both, > one)."""
    pairs = list(zip(elbo, active, strict=True))
    return [
        not any(e2 >= e and a2 >= a and (e2 > e or a2 > a) for e2, a2 in pairs) for e, a in pairs
    ]


def recommend(
    by_setting: pd.DataFrame, keys: Sequence[str], keep: float
) -> tuple[str, pd.DataFrame]:
    """The recommendation in words, and the ELBO/active-units Pareto front (per sweep)."""
    import pandas as pd

    texts, fronts = [], []
    groups = by_setting.groupby("sweep", sort=False) if "sweep" in keys else [("", by_setting)]
    for sweep, group in groups:
        text, front = _recommend_one(group, [k for k in keys if k != "sweep"], keep)
        texts.append(f"Sweep {sweep}: {text}" if sweep else text)
        fronts += [front] if front is not None else []
    columns = [*keys, "n", "test_elbo_mean", "test_elbo_ci95", "active_units_mean"]
    columns += ["active_units_ci95", "active_share_mean", "recommended"]
    pareto = pd.concat(fronts)[columns] if fronts else pd.DataFrame(columns=columns)
    return " ".join(texts), pareto.reset_index(drop=True)


def _recommend_one(
    group: pd.DataFrame, keys: Sequence[str], keep: float
) -> tuple[str, pd.DataFrame | None]:
    """Among settings whose mean share of active units (Burda et al. 2015) is at least `keep`,
    the best mean test ELBO (on a tie, the smaller λ); the smallest such λ is named too when it
    differs, since a smaller free-bits floor changes the objective less (Kingma et al. 2016)."""
    ok = group[(group["n"] > 0) & group["test_elbo_mean"].notna()]
    ok = ok[ok["active_units_mean"].notna()]
    if ok.empty:
        return "No run has finished yet, so there is nothing to recommend.", None
    shown = varying(ok, keys)
    front = ok[pareto_mask(ok["test_elbo_mean"], ok["active_units_mean"])]
    front = front.sort_values("active_units_mean", kind="stable").copy()
    front["recommended"] = False

    def said(row: pd.Series) -> str:
        units = f"{row['active_units_mean']:.1f} of {fmt_value(row['latent_dim'])} units active"
        elbo = fmt_pm(row["test_elbo_mean"], row["test_elbo_ci95"])
        return f"{describe(row, shown)} ({units}, ELBO {elbo} nats)"

    qualify = ok[ok["active_share_mean"] >= keep - 1e-9]
    if qualify.empty:
        top = ok.sort_values(["active_units_mean", "test_elbo_mean"]).iloc[-1]
        text = f"No setting keeps {keep:.0%} of the latent units active; "
        text += f"the most active setting is {said(top)}."
    else:
        pick = qualify.sort_values(["test_elbo_mean", "lambda"], ascending=[False, True])
        pick = pick.iloc[0]
        front.loc[front.index == pick.name, "recommended"] = True
        cost = ok["test_elbo_mean"].max() - pick["test_elbo_mean"]
        text = f"Recommended: {said(pick)}, the best ELBO among settings keeping at least "
        text += f"{keep:.0%} of units active"
        text += f", {cost:.2f} nats below the best ELBO overall." if cost > 0 else "."
        smallest = qualify.sort_values(["lambda", "test_elbo_mean"], ascending=[True, False])
        if smallest.index[0] != pick.name:
            text += f" The smallest λ that does so is {said(smallest.iloc[0])}."
    names = [describe(r, shown) for _, r in front.iterrows()]
    more = f" and {len(names) - 6} more" if len(names) > 6 else ""
    text += f" Pareto front of ELBO vs active units: {'; '.join(names[:6])}{more}."
    return text, front


def build_report(
    results_dir: Path,
    out_dir: Path | None = None,
    formats: Sequence[str] = ("png",),
    keep_share: float = 0.9,
    style: str = "default",
    width: float | None = None,
) -> ReportResult:
    """Report every run below `results_dir` into `out_dir` (default results_dir/report).

    `results_dir` may be a results root, one sweep folder or any folder above run folders.
    `keep_share` is the share of latent units the recommended setting must keep active.
    `style`: default, paper, talk or a .mplstyle file; `width`: inches of a one-panel figure.
    Raises ResultsError (one line) when the folder is missing, not a folder, or has no readable run.
    """
    from freebits_cli.report.draw import draw_all, style_sheets
    from freebits_cli.report.figures import FigureInput

    results_dir = Path(results_dir).expanduser()
    fmts = parse_formats(formats)
    if isinstance(keep_share, bool) or not 0 < keep_share <= 1:
        raise ResultsError(f"keep share: {keep_share!r} is not a share in (0, 1]")
    style_sheets(style, width)  # a bad style or width fails before anything is read
    out = Path(out_dir).expanduser() if out_dir is not None else results_dir / "report"
    runs = read_results(results_dir, skip=out)
    by_setting = by_setting_table(runs)
    examples = [p for p in by_setting.pop("_example") if isinstance(p, str)]
    strategies = strategies_table(by_setting, runs.keys)
    recommendation, pareto = recommend(by_setting, runs.keys, keep_share)
    kl_history, samples, sentences = {}, {}, {}
    for key in examples:  # other runs' kl_per_dim.csv and samples.npz are not shown: not read

        def warn(msg: str, key: str = key) -> None:
            runs.warnings.append(f"{key}: {msg}")

        if (hist := read_kl_history(runs.dirs[key], warn)) is not None:
            kl_history[key] = hist
        if (lines := read_sentences(runs.dirs[key], warn)) is not None:
            sentences[key] = lines  # a text run's samples
        elif (data := read_samples(runs.dirs[key], warn)) is not None:
            samples[key] = data
    csvs = {"summary.csv": runs.table, "by_setting.csv": by_setting}
    csvs |= {"strategies.csv": strategies, "pareto.csv": pareto}
    figure_input = FigureInput(
        runs=runs.table, by_setting=by_setting, keys=runs.keys, metrics=runs.metrics,
        kl_final=runs.kl_final, collapse=runs.collapse, examples=examples,
        kl_history=kl_history, samples=samples, pareto=pareto, keep_share=keep_share,
    )  # fmt: skip
    # Written in a hidden folder beside `out`, then swapped in: an interrupted report (Ctrl-C, a
    # full disk) leaves the previous one whole, never a page out of step with its CSVs.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        written = []
        for name, df in csvs.items():
            df.to_csv(tmp / name, index=False)
            written.append(tmp / name)
        figures = draw_all(figure_input, tmp, fmts, style, width)
        labels = example_labels(runs.table, by_setting, examples, runs.keys)
        page = write_index(
            tmp, results_dir, runs, csvs, recommendation, figures, keep_share,
            sentences_html(sentences, labels),
        )  # fmt: skip
        written += [*figures.files, page]
        _swap_in(tmp, out)
    except OSError as exc:
        raise ResultsError(f"{out}: cannot write the report ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = [out / p.name for p in written[: len(csvs)]]
    figure_files = [out / p.name for p in figures.files]
    index = out / written[-1].name
    return ReportResult(
        out_dir=out,
        index_html=index,
        by_setting=by_setting,
        recommendation=recommendation,
        counts=runs.counts(),
        warnings=tuple(runs.warnings + figures.warnings),
        files=(*files, *figure_files, index),
    )


def example_labels(
    table: pd.DataFrame, by_setting: pd.DataFrame, examples: Sequence[str], keys: Sequence[str]
) -> dict[str, str]:
    """Run key of each setting's example run -> the setting's short label, in table order."""
    shown = varying(by_setting, keys) or ["lambda"]
    rows = table.set_index("path")
    return {key: short_label(rows.loc[key], shown) for key in examples if key in rows.index}


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished report folder `tmp` in place of `out`.

    A folder holding anything but report files (sub-folders, other kinds of file) is not
    replaced: the new files are moved into it one by one, each replacing its old version."""
    report_like = {".csv", ".html", *(f".{f}" for f in FORMATS)}
    if out.exists() and any(p.is_dir() or p.suffix not in report_like for p in out.iterdir()):
        for path in tmp.iterdir():
            os.replace(path, out / path.name)
        return
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the previous report back
        raise
    shutil.rmtree(old, ignore_errors=True)
