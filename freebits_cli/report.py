"""`freebits report`: read the files runs wrote; write tables, figures and one index.html.

Reads only files (JSON, CSV, samples.npz): never torch, never retrains, so it works on a sweep that
is still running or has failed runs. Each problem in the files becomes one warning line; only
"nothing to report" raises `ResultsError` (exit 2). Figures: report_figures; page: report_html.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli.errors import ResultsError
from freebits_cli.report_html import by_setting_rows

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["ReportResult", "build_report", "by_setting_rows", "find_run_dirs", "t975"]

FORMATS = ("png", "svg", "pdf")
RUN_MARKERS = ("config.json", "summary.json", "failed.json")  # under runs/ (DESIGN.md, layout)
CANON = {"free_bits.lambda": "lambda", "free_bits.mode": "free_bits_mode"}
CANON |= {"anneal.schedule": "anneal", "train.seed": "seed"}
METRICS = ("test_elbo", "test_recon", "test_kl", "active_units", "active_share")
METRICS += ("active_units_kl", "test_iwae_nll", "test_mi", "seconds")
STRATEGIES = ("baseline", "annealing only", "free bits only", "both")  # seed text, Exercise 2
TEXT_COLS = {"run_id", "free_bits_mode", "anneal"}
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


@dataclass
class Runs:
    """Everything read from the run folders, keyed by the run folder relative to the root."""

    table: pd.DataFrame  # one row per run: setting, state, final metrics (= summary.csv)
    keys: list[str]  # setting columns: [sweep,] lambda, free_bits_mode, anneal, other grid fields
    metrics: dict[str, pd.DataFrame]  # per-epoch rows, possibly partial
    kl_final: dict[str, np.ndarray]  # final KL per latent dimension (done runs)
    collapse: dict[str, list[Any]]  # epoch each dimension collapsed (summary.json)
    dirs: dict[str, Path]
    specs: dict[str, str]  # sweep name -> spec.yaml text
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        states = self.table["state"].value_counts()
        return {s: int(states.get(s, 0)) for s in ("done", "failed", "incomplete")}


def t975(dof: int) -> float:
    """Two-sided 95% Student-t quantile; Cornish-Fisher expansion beyond the table (error < 1e-5)."""
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


def find_run_dirs(root: Path, skip: Path | None = None) -> list[Path]:
    """Every run folder below `root` (itself included), sorted, never inside `skip`."""
    skipped = skip.resolve() if skip is not None else None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skipped is not None and here != root and here.resolve() == skipped:
            dirnames.clear()  # the report's own folder: never read our own output
        elif here.parent.name == "runs" and any(m in filenames for m in RUN_MARKERS):
            found.append(here)
            dirnames.clear()
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:120]


def read_json(path: Path, warn: Callable[[str], None], then: str = "ignored") -> dict | None:
    """The JSON object in `path`; None (and a warning) if it is corrupt; None if absent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        warn(f"{path.name} is corrupt ({_why(exc)}); {then}")
        return None
    if not isinstance(data, dict):
        warn(f"{path.name} is not a JSON object; {then}")
        return None
    return data


def read_csv(path: Path, keys: Sequence[str], warn: Callable[[str], None]) -> pd.DataFrame | None:
    """Rows of a CSV a run wrote, dropping a torn last line and malformed rows (with warnings)."""
    import pandas as pd

    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        warn(f"{path.name} is unreadable ({_why(exc)}); ignored")
        return None
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]), [])
    if not all(k in header for k in keys):
        warn(f"{path.name} is corrupt (no header naming {', '.join(keys)}); ignored")
        return None
    body = lines[1:]
    # A writer killed mid-line (kill -9) leaves a last line without newline; its numbers may be cut.
    if body and not text.endswith(("\n", "\r")):
        body.pop()
        warn(f"{path.name}: last line is torn (cut off mid-write); ignored")
    rows = [r for r in csv.reader(body) if r]
    df = pd.DataFrame([r for r in rows if len(r) == len(header)], columns=header, dtype=object)
    bad = pd.Series(0, index=df.index)
    for col in df.columns:
        if col not in TEXT_COLS:
            raw = df[col].astype(str).str.strip()
            df[col] = pd.to_numeric(raw, errors="coerce").astype(float)
            bad += (raw != "") & df[col].isna() & (raw.str.lower() != "nan")
    ok = df[list(keys)].notna().all(axis=1)
    if (bad_rows := len(rows) - int(ok.sum())) > 0:
        warn(f"{path.name}: {bad_rows} malformed line(s) ignored")
    if (bad_values := int(bad[ok].sum())) > 0:
        warn(f"{path.name}: {bad_values} unparsable value(s) read as missing")
    df = df[ok]
    if df.duplicated(list(keys)).any():
        warn(f"{path.name}: duplicate rows for the same {'/'.join(keys)}; kept the last")
        df = df.drop_duplicates(list(keys), keep="last")
    return df.sort_values(list(keys)).reset_index(drop=True)
