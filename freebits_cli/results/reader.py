"""Read run folders (config/summary/failed JSON, metrics CSVs, samples.npz) into tables.

Tolerant by design: a sweep may still be running, or have been killed mid-write (kill -9), so each
problem (torn last line, corrupt JSON, run with no epochs) becomes one warning and reading goes on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli import schema
from freebits_cli.errors import ResultsError
from freebits_cli.results.settings import flat_config, split_by_config

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TEXT_COLS = set(schema.TEXT_COLUMNS)
NUMERIC_COLS = {*schema.METRICS_COLUMNS, *schema.KL_COLUMNS} - TEXT_COLS


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
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # dotted field -> value

    def counts(self) -> dict[str, int]:
        states = self.table["state"].value_counts()
        return {s: int(states.get(s, 0)) for s in ("done", "failed", "incomplete")}


def find_run_dirs(root: Path, skip: Path | None = None) -> list[Path]:
    """Every run folder below `root` (itself included), sorted, never inside `skip`."""
    skipped = skip.resolve() if skip is not None else None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skipped is not None and here != root and here.resolve() == skipped:
            dirnames.clear()  # the report's own folder: never read our own output
        elif here.parent.name == schema.RUNS_DIR and any(
            m in filenames for m in schema.RUN_MARKERS
        ):
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
    body = [line for line in lines[1:] if line.strip()]
    # A writer killed mid-line (kill -9) leaves a last line without newline; its numbers may be cut.
    if body and not text.endswith(("\n", "\r")):
        body.pop()
        warn(f"{path.name}: last line is torn (cut off mid-write); ignored")
    good = [line for line in body if line.count(",") == len(header) - 1]  # runs quote no commas
    try:
        df = pd.read_csv(
            io.StringIO("\n".join([lines[0], *good])),
            dtype={c: str for c in header if c in TEXT_COLS},
            skipinitialspace=True,
        )
    except ValueError as exc:  # pandas' ParserError, e.g. an unbalanced quote
        warn(f"{path.name} is corrupt ({_why(exc)}); ignored")
        return None
    bad = pd.Series(0, index=df.index)
    for col in df.columns:
        if col in TEXT_COLS or pd.api.types.is_numeric_dtype(df[col]):
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        # A contract column with text in it is damaged; an unknown all-text column is just text
        # (e.g. `binarize`): runs may add columns the report does not know about.
        if col in NUMERIC_COLS or num.notna().any():
            bad += df[col].notna() & num.isna()
            df[col] = num.astype(float)
    ok = df[list(keys)].notna().all(axis=1)
    if (bad_rows := len(body) - int(ok.sum())) > 0:
        warn(f"{path.name}: {bad_rows} malformed line(s) ignored")
    if (bad_values := int(bad[ok].sum())) > 0:
        warn(f"{path.name}: {bad_values} unparsable value(s) read as missing")
    df = df[ok]
    if df.duplicated(list(keys)).any():
        warn(f"{path.name}: duplicate rows for the same {'/'.join(keys)}; kept the last")
        df = df.drop_duplicates(list(keys), keep="last")
    return df.sort_values(list(keys)).reset_index(drop=True)


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _pick(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def strategy(lam: float, schedule: Any) -> str:
    """Exercise 2 of the seed text: which remedies against posterior collapse a run uses."""
    if math.isnan(lam) or schedule is None:
        return ""
    annealed = str(schedule) not in ("none", "constant")  # a constant β is no annealing
    return {(False, False): "baseline", (False, True): "annealing only"}.get(
        (lam > 0, annealed), "both" if annealed else "free bits only"
    )


def cross_entropy(likelihood: Any, binarize: Any) -> bool:
    """A Bernoulli decoder scored on grayscale targets (`binarize: none`): its reconstruction term
    is a summed cross-entropy, not a log-likelihood, so neither ELBO nor IWAE bound a likelihood."""
    return likelihood == "bernoulli" and binarize == "none"


def _load_run(root: Path, run_dir: Path, runs: Runs) -> tuple[dict[str, Any], bool]:
    """One summary.csv row for `run_dir` (recording what else it holds in `runs`); readable?"""
    import numpy as np

    key = run_dir.relative_to(root).as_posix()

    def warn(msg: str) -> None:
        runs.warnings.append(f"{key}: {msg}")

    config = read_json(run_dir / schema.CONFIG, warn) or {}
    summary = read_json(run_dir / schema.SUMMARY, warn, then="run counted as incomplete")
    failed = read_json(run_dir / schema.FAILED, warn, then="run not counted as failed")
    problems = len(runs.warnings)
    metrics = read_csv(run_dir / schema.METRICS_CSV, ("epoch",), warn)
    if metrics is not None and metrics.empty:
        metrics = None
    if metrics is None and len(runs.warnings) == problems:  # one line per problem
        warn("no epochs recorded (metrics.csv missing or empty)")
    state = "done" if summary is not None else "failed" if failed is not None else "incomplete"
    s, f, cfg = summary or {}, failed or {}, config.get("config") or {}
    setting = next((x for x in (s, config, f) if isinstance(x.get("setting"), dict)), {})
    setting = setting.get("setting", {})
    last: dict[str, Any] = metrics.iloc[-1].to_dict() if metrics is not None else {}

    def field(name: str, dotted: str) -> Any:
        return _pick(
            s.get(name), f.get(name), setting.get(dotted), _get(cfg, dotted), last.get(name)
        )

    sweep_dir = run_dir.parent.parent
    sweep = str(_pick(s.get("sweep"), config.get("sweep"), f.get("sweep"), sweep_dir.name))
    if sweep not in runs.specs and (sweep_dir / schema.SPEC_FILE).is_file():
        try:
            runs.specs[sweep] = (sweep_dir / schema.SPEC_FILE).read_text("utf-8", errors="replace")
        except OSError as exc:
            warn(f"../../spec.yaml is unreadable ({_why(exc)})")
    lam, schedule = _num(field("lambda", "free_bits.lambda")), field("anneal", "anneal.schedule")
    kl = s.get("kl_per_dim") if isinstance(s.get("kl_per_dim"), list) else None
    dim = _num(_pick(s.get("latent_dim"), _get(cfg, "model.latent_dim"), kl and len(kl)))
    row: dict[str, Any] = {
        "sweep": sweep,
        "run_id": str(_pick(s.get("run_id"), config.get("run_id"), f.get("run_id"), run_dir.name)),
        "state": state,
        "lambda": lam,
        "free_bits_mode": field("free_bits_mode", "free_bits.mode"),
        "anneal": schedule,
        "seed": _num(field("seed", "train.seed")),
    }
    # Other grid fields (e.g. model.latent_dim); lists become JSON text so they can be group keys.
    for name, value in setting.items():
        if name not in schema.LABEL_FIELDS:
            row[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    row |= {"strategy": strategy(lam, schedule), "latent_dim": dim}
    row["epochs"] = _num(_pick(s.get("epochs"), _get(cfg, "train.epochs")))
    row["epochs_done"] = metrics["epoch"].max() if metrics is not None else math.nan
    row["dataset"] = _pick(s.get("dataset"), _get(cfg, "dataset.name"))
    row["binarize"] = _pick(s.get("binarize"), _get(cfg, "dataset.binarize"))
    row["likelihood"] = _get(cfg, "model.likelihood") or ("bernoulli" if cfg else None)
    row["cross_entropy"] = cross_entropy(row["likelihood"], row["binarize"])
    # Final metrics: summary.json for done runs; the last epoch so far for the others.
    for name in schema.FINAL_METRICS:
        if name not in schema.SPARSE_METRICS:
            row[name] = _num(_pick(s.get(name), last.get(name)))
        else:  # only on some epochs: never take a stale one
            col = metrics[name].dropna() if metrics is not None and name in metrics else ()
            row[name] = _num(s.get(name)) if summary else _num(col.iloc[-1] if len(col) else None)
    row["active_share"] = row["active_units"] / dim if dim > 0 else math.nan
    # The verdict a finished run wrote (results/information.py); none before it finished.
    row["information"] = s.get("information") if summary else None
    row["iwae_samples"] = _num(_pick(s.get("iwae_samples"), _get(cfg, "eval.iwae_samples")))
    row |= {
        "seconds": _num(s.get("seconds")),
        schema.PACK_SECONDS: _num(s.get(schema.PACK_SECONDS)),
        "device": _pick(s.get("device"), config.get("device")),
    }
    row["failed_reason"] = str(f.get("reason", "unknown")) if state == "failed" else None
    row["failed_epoch"] = _num(f.get("epoch")) if state == "failed" else math.nan
    # An unreadable summary.json: the run ended, but its result is lost (not "running").
    row["summary_damaged"] = summary is None and (run_dir / schema.SUMMARY).exists()
    row["path"] = key
    runs.dirs[key] = run_dir
    runs.configs[key] = flat_config(cfg)
    if metrics is not None:
        runs.metrics[key] = metrics
    if state == "done" and kl is not None:
        runs.kl_final[key] = np.array([_num(v) for v in kl])
    elif state == "done" and (hist := read_kl_history(run_dir, warn)) is not None:
        runs.kl_final[key] = hist[hist["epoch"] == hist["epoch"].max()]["kl"].to_numpy()
    if isinstance(s.get("collapse_epoch"), list):
        runs.collapse[key] = s["collapse_epoch"]
    return row, bool(config or summary or failed or metrics is not None)


def read_kl_history(run_dir: Path, warn: Callable[[str], None]) -> pd.DataFrame | None:
    """kl_per_dim.csv (epoch, dim, kl), or None when absent, unreadable or empty."""
    hist = read_csv(run_dir / schema.KL_PER_DIM, ("epoch", "dim"), warn)
    return hist if hist is not None and not hist.empty and "kl" in hist else None


def read_results(results_dir: Path, skip: Path | None = None) -> Runs:
    """Every run below `results_dir` (a results root, one sweep folder or one run folder), never
    reading inside `skip` (the report's own folder). The one reader behind `freebits report` and
    the Python API. Raises ResultsError (one line) when the folder is missing, not a folder, or
    has no readable run."""
    results_dir = Path(results_dir).expanduser()
    if not results_dir.exists():
        raise ResultsError(f"{results_dir}: no such folder")
    if not results_dir.is_dir():
        raise ResultsError(f"{results_dir}: not a folder")
    run_dirs = find_run_dirs(results_dir, skip=skip)
    if not run_dirs:
        raise ResultsError(
            f"{results_dir}: no runs found (expected <sweep>/runs/<run-id>/ folders holding "
            "config.json, summary.json or failed.json)"
        )
    runs, readable = read_runs(results_dir, run_dirs)
    if not readable:
        raise ResultsError(
            f"{results_dir}: none of the {len(run_dirs)} run folder(s) could be read "
            f"(first problem: {runs.warnings[0] if runs.warnings else 'no files'})"
        )
    return runs


def read_runs(root: Path, run_dirs: Sequence[Path]) -> tuple[Runs, int]:
    """Read every run folder; returns the runs and how many folders held anything readable."""
    import pandas as pd

    runs = Runs(pd.DataFrame(), [], {}, {}, {}, {}, {})
    rows, readable = [], 0
    for run_dir in run_dirs:
        row, ok = _load_run(root, run_dir, runs)
        rows.append(row)
        readable += ok
    split_by_config(rows, runs.configs, runs.warnings)
    table = pd.DataFrame(rows)
    extras = sorted(c for c in table.columns if "." in c)
    front = ["sweep", "run_id", "state", "lambda", "free_bits_mode", "anneal", "seed", *extras]
    table = table[front + [c for c in table.columns if c not in front]]
    for col in ("seed", "latent_dim", "epochs", "epochs_done", "iwae_samples", "failed_epoch"):
        if (table[col].dropna() % 1 == 0).all():  # counts read as floats: show them as integers
            table[col] = table[col].astype("Int64")
    runs.table = table
    runs.keys = ["sweep"] * (table["sweep"].nunique() > 1) + front[3:6] + extras
    return runs, readable


def read_samples(run_dir: Path, warn: Callable[[str], None]) -> dict[str, np.ndarray] | None:
    """samples.npz (originals, reconstructions, prior_samples as [n, P] in [0, 1]; image_shape,
    (H, W) or (C, H, W))."""
    import numpy as np

    path = run_dir / schema.SAMPLES
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: np.asarray(npz[name]) for name in npz.files}
    except Exception as exc:  # a torn zip raises BadZipFile, EOFError, ValueError, OSError, ...
        warn(f"samples.npz is corrupt ({_why(exc)}); ignored")
        return None
    raw_shape = np.ravel(data.get("image_shape", []))
    if raw_shape.dtype.kind not in "iu":  # floats, complex, text: not a shape
        warn("samples.npz has no integer image_shape; ignored")
        return None
    shape = tuple(int(v) for v in raw_shape)
    # (H, W) grayscale or (C, H, W) with 1 or 3 channels (colour, e.g. CIFAR-10).
    image = len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))
    pixels = int(np.prod(shape)) if image else -1
    arrays = [data[k] for k in ("originals", "reconstructions", "prior_samples") if k in data]
    if not arrays or any(a.ndim != 2 or a.shape[1] != pixels for a in arrays):
        warn("samples.npz does not hold [n, c*h*w] images matching image_shape; ignored")
        return None
    return data


#: The sentence lists of a text run's samples.json, in the order a page shows them: greedy
#: decodes, then the same codes decoded by sampling at the run's `eval.temperature` (absent in
#: runs written before sampled decoding).
SENTENCE_KEYS = (
    "originals",
    "reconstructions",
    "prior_samples",
    "homotopy",
    "sampled_reconstructions",
    "sampled_prior_samples",
)


def read_sentences(run_dir: Path, warn: Callable[[str], None]) -> dict[str, list[str]] | None:
    """samples.json of a text run: test sentences, their reconstructions, prior samples and a
    homotopy, each a list of strings; None (with a warning if damaged) when there is none."""
    data = read_json(run_dir / schema.SENTENCES, warn, "ignored")
    if data is None:
        return None
    found = {k: data[k] for k in SENTENCE_KEYS if isinstance(data.get(k), list)}
    if not found or not all(isinstance(s, str) for v in found.values() for s in v):
        warn("samples.json does not hold lists of sentences; ignored")
        return None
    return found
