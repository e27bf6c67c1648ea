"""The results layout on disk, with writes that a crash can never leave half done.

RESULTS/<sweep>/spec.yaml, RESULTS/<sweep>/runs/<run-id>/{config.json, metrics.csv, kl_per_dim.csv,
samples.npz, checkpoint.pt, failed.json, summary.json}. summary.json is written last: it marks a
complete run. Whole files are replaced atomically (write to a temporary, then rename); CSVs grow by
appending whole rows, and a torn last row (a kill mid-write) is trimmed when the run resumes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ResultsError
from .spec import NAME_PATTERN, RunConfig

METRICS_COLUMNS = (
    "run_id",
    "lambda",
    "free_bits_mode",
    "anneal",
    "seed",
    "binarize",
    "epoch",
    "step",
    "beta",
    "train_loss",
    "train_recon",
    "train_kl",
    "test_elbo",
    "test_recon",
    "test_kl",
    "active_units",
    "active_units_kl",
    "binding_share",
    "test_iwae_nll",
    "test_mi",
    "test_bits_per_dim",
    "test_iwae_bits_per_dim",
    "seconds",
)
KL_COLUMNS = ("epoch", "dim", "kl")
CONFIG, METRICS, KL_PER_DIM = "config.json", "metrics.csv", "kl_per_dim.csv"
SUMMARY, FAILED, CHECKPOINT, SAMPLES = "summary.json", "failed.json", "checkpoint.pt", "samples.npz"


def sweep_dir(results: Path, name: str) -> Path:
    if not NAME_PATTERN.match(name):
        raise ResultsError(f"name: {name!r} is not a safe folder name")
    return Path(results) / name


def run_dir(sweep: Path, run_id: str) -> Path:
    # Run ids are built from validated numbers and names; this guards against any slip all the same.
    if not NAME_PATTERN.match(run_id) or ".." in run_id:
        raise ResultsError(f"run id {run_id!r} is not a safe folder name")
    return sweep / "runs" / run_id


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode())


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def append_rows(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append whole rows in one write (header first when the file is new)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    new = not path.exists() or path.stat().st_size == 0
    if new:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(c)) for c in columns])
    with open(path, "a") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def trim_rows(path: Path, last_epoch: int) -> None:
    """Keep the header and the complete rows of epochs ≤ last_epoch; drop torn or later rows."""
    if not path.exists():
        return
    text = path.read_text()
    lines = text.split("\n")
    if not lines or not lines[0]:
        path.unlink()
        return
    header = lines[0].split(",")
    epoch_at = header.index("epoch")
    kept = [lines[0]]
    # The last element is "" after a final newline, or a torn row without one: never kept.
    for line in lines[1:-1]:
        fields = next(csv.reader([line]))
        complete = len(fields) == len(header) and fields[epoch_at].isdigit()
        if complete and int(fields[epoch_at]) <= last_epoch:
            kept.append(line)
    write_text(path, "\n".join(kept) + "\n")


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch

    return {
        "versions": {
            "freebits": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def config_matches(folder: Path, run: RunConfig) -> bool:
    saved = read_json(folder / CONFIG)
    return isinstance(saved, dict) and saved.get("config") == run.to_dict()


def run_state(folder: Path, run: RunConfig | None = None) -> str:
    """done | failed | interrupted | pending, from the files alone."""
    if not folder.exists():
        return "pending"
    if run is not None and (folder / CONFIG).exists() and not config_matches(folder, run):
        return "pending"
    if (folder / SUMMARY).exists():
        return "done"
    if (folder / FAILED).exists():
        return "failed"
    if (folder / CHECKPOINT).exists() or (folder / METRICS).exists():
        return "interrupted"
    return "pending"


def reset_run(folder: Path) -> None:
    """Remove a run's files before training it from scratch (--force, failed or stale runs).

    summary.json goes first: a kill halfway through must not leave a "complete" run behind."""
    (folder / SUMMARY).unlink(missing_ok=True)
    if folder.exists():
        shutil.rmtree(folder)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint, loaded safely (weights_only), or None when absent or unreadable."""
    import torch

    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
