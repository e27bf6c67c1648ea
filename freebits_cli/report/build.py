"""`freebits report`, start to end: find and read the runs, compute the tables, draw the
figures, write the page, and swap the finished folder in place of the previous report."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli import schema
from freebits_cli.errors import ResultsError
from freebits_cli.report.html import write_index
from freebits_cli.report.labels import short_label, varying
from freebits_cli.report.recommend import recommend, strategies_table
from freebits_cli.report.remedies import remedies_table
from freebits_cli.report.sentences import sentences_html
from freebits_cli.report.stats import by_setting_table
from freebits_cli.results.reader import read_kl_history, read_results, read_samples, read_sentences

if TYPE_CHECKING:
    import pandas as pd

    from freebits_cli.report.figures import FigureInput
    from freebits_cli.results.reader import Runs

FORMATS = ("png", "svg", "pdf")


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
    from freebits_cli.report.draw import draw_report, style_sheets

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
    csvs = {schema.SUMMARY_CSV: runs.table, schema.BY_SETTING_CSV: by_setting}
    csvs |= {schema.STRATEGIES_CSV: strategies, schema.PARETO_CSV: pareto}
    remedies = remedies_table(runs)
    csvs |= {schema.REMEDIES_CSV: remedies}
    figure_input, sentences = figure_data(runs, by_setting, examples, pareto, keep_share)
    figure_input.remedies = remedies
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
        figures = draw_report(figure_input, tmp, fmts, style, width)
        labels = example_labels(runs.table, by_setting, examples, runs.keys)
        page = write_index(
            tmp,
            results_dir,
            runs,
            csvs,
            recommendation,
            figures,
            keep_share,
            sentences_html(sentences, labels, marginal_kls(runs.table)),
        )
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


def figure_data(
    runs: Runs,
    by_setting: pd.DataFrame,
    examples: list[str],
    pareto: pd.DataFrame,
    keep_share: float,
) -> tuple[FigureInput, dict[str, dict[str, list[str]]]]:
    """What the figures read: the tables, and the kl_per_dim.csv and samples of the one run per
    setting (`examples`) the figures show; other runs' files of that kind are not read. Text
    runs' samples are sentences (samples.json), returned apart for the page."""
    from freebits_cli.report.figures import FigureInput

    kl_history, samples, sentences = {}, {}, {}
    for key in examples:

        def warn(msg: str, key: str = key) -> None:
            runs.warnings.append(f"{key}: {msg}")

        if (hist := read_kl_history(runs.dirs[key], warn)) is not None:
            kl_history[key] = hist
        if (lines := read_sentences(runs.dirs[key], warn)) is not None:
            sentences[key] = lines
        elif (data := read_samples(runs.dirs[key], warn)) is not None:
            samples[key] = data
    informative = informative_units(runs, kl_history)
    figure_input = FigureInput(
        runs=runs.table,
        by_setting=by_setting,
        keys=runs.keys,
        metrics=runs.metrics,
        kl_final=runs.kl_final,
        collapse=runs.collapse,
        examples=examples,
        kl_history=kl_history,
        samples=samples,
        pareto=pareto,
        keep_share=keep_share,
        informative_units=informative,
        text=bool(sentences) or is_text(runs.table),
    )
    return figure_input, sentences


def marginal_kls(table: pd.DataFrame) -> dict[str, float | None]:
    """Run key -> its final marginal KL (None where it was not measured)."""
    if "test_marginal_kl" not in table:
        return {}
    values = table["test_marginal_kl"].astype(float)
    return {p: (None if v != v else float(v)) for p, v in zip(table["path"], values, strict=True)}


def is_text(table: pd.DataFrame) -> bool:
    """Whether the runs model text (a categorical decoder over tokens)."""
    return "likelihood" in table and bool((table["likelihood"] == "categorical").any())


def informative_units(runs: Runs, examples: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Done run key -> per unit (by dim), whether its posterior mean varies with x at the final
    epoch: kl_spread = ½ Var_x μ_j > δ/2, i.e. Cov_x(μ_j) > δ, the covariance rule (Burda et
    al. 2015) with the run's own δ (eval.au_threshold). Read only when the example runs'
    kl_per_dim.csv has the column (runs written before the decomposition have none)."""
    if not any("kl_spread" in h for h in examples.values()):
        return {}
    out = {}
    for key in runs.table.loc[runs.table["state"] == "done", "path"]:
        hist = examples.get(key)
        if hist is None:
            hist = read_kl_history(
                runs.dirs[key], lambda msg, k=key: runs.warnings.append(f"{k}: {msg}")
            )
        if hist is None or "kl_spread" not in hist:
            continue
        final = hist[hist["epoch"] == hist["epoch"].max()].sort_values("dim")
        delta = float(runs.configs.get(key, {}).get("eval.au_threshold", 0.01))
        out[key] = final["kl_spread"].to_numpy(float) > delta / 2
    return out


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
