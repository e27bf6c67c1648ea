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
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from freebits_cli import __version__
from freebits_cli.errors import ResultsError
from freebits_cli.results.locks import LOCK
from freebits_cli.schema import (
    CHECKPOINT,
    CHECKPOINT_NEXT,
    CONFIG,
    FAILED,
    METRICS_CSV,
    RUNS_DIR,
    SUMMARY,
)
from freebits_cli.spec import NAME_PATTERN, RunConfig, identity_of


def sweep_dir(results: Path, name: str) -> Path:
    if not NAME_PATTERN.match(name):
        raise ResultsError(f"name: {name!r} is not a safe folder name")
    return Path(results) / name


def run_dir(sweep: Path, run_id: str) -> Path:
    # Run ids are built from validated numbers and names; this guards against any slip all the same.
    if not NAME_PATTERN.match(run_id) or ".." in run_id:
        raise ResultsError(f"run id {run_id!r} is not a safe folder name")
    return sweep / RUNS_DIR / run_id


def temporary(path: Path, suffix: str = ".tmp") -> Path:
    """A temporary name beside `path`, unique to this process and call (two sweeps may share a
    folder), hidden, so readers never mistake it for the real file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its files are private (0600), and results are often shared.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # a full disk must not leave a partial file behind
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


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
    except (OSError, ValueError):  # ValueError: bad JSON or not UTF-8
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
    try:
        with open(path, "a") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # a full disk: name the file (a torn row is trimmed on resume)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def _csv_lines(path: Path) -> list[str] | None:
    """The lines of a CSV a run wrote (the last one "" or torn), or None when absent/unreadable."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    return lines if lines and lines[0] else None


def _complete_rows(lines: list[str]) -> list[tuple[int, str]]:
    """(epoch, line) of every whole row; the last element is "" after a final newline, or a torn
    row without one: never counted."""
    header = next(csv.reader([lines[0]]))
    if "epoch" not in header:
        return []
    epoch_at = header.index("epoch")
    rows = []
    for line in lines[1:-1]:
        fields = next(csv.reader([line]), [])
        if len(fields) == len(header) and fields[epoch_at].isdigit():
            rows.append((int(fields[epoch_at]), line))
    return rows


def csv_epochs(path: Path) -> list[int] | None:
    """Epoch of each complete row, in file order; None when the file is absent or unreadable."""
    lines = _csv_lines(path)
    return None if lines is None else [epoch for epoch, _ in _complete_rows(lines)]


def trim_rows(path: Path, last_epoch: int) -> None:
    """Keep the header and the complete rows of epochs ≤ last_epoch; drop torn or later rows."""
    if not path.exists():
        return
    lines = _csv_lines(path)
    if lines is None:
        path.unlink()
        return
    kept = [lines[0]] + [line for epoch, line in _complete_rows(lines) if epoch <= last_epoch]
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
    """The folder holds this run: same config up to where it trained and where its data lived."""
    saved = read_json(folder / CONFIG)
    config = saved.get("config") if isinstance(saved, dict) else None
    return isinstance(config, dict) and identity_of(config) == run.identity()


def read_summary(folder: Path) -> dict[str, Any] | None:
    """summary.json when it is a readable JSON object, else None (a damaged one marks nothing)."""
    summary = read_json(folder / SUMMARY)
    return summary if isinstance(summary, dict) else None


def run_state(folder: Path, run: RunConfig | None = None) -> str:
    """done | failed | interrupted | pending, from the files alone."""
    if not folder.exists():
        return "pending"
    if run is not None and (folder / CONFIG).exists() and not config_matches(folder, run):
        return "pending"
    if read_summary(folder) is not None:
        return "done"
    if isinstance(read_json(folder / FAILED), dict):
        return "failed"
    if any((folder / name).exists() for name in (CHECKPOINT, CHECKPOINT_NEXT, METRICS_CSV)):
        return "interrupted"
    return "pending"


def reset_run(folder: Path) -> None:
    """Remove a run's files before training it from scratch (--force, failed or stale runs).

    summary.json goes first: a kill halfway through must not leave a "complete" run behind. The
    lock file stays: the caller holds it (see `locks`)."""
    (folder / SUMMARY).unlink(missing_ok=True)
    if not folder.exists():
        return
    for child in folder.iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink(missing_ok=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write_bytes(path, buffer.getvalue())


def promote_checkpoint(folder: Path) -> None:
    """The pending checkpoint becomes the run's checkpoint (one atomic rename)."""
    os.replace(folder / CHECKPOINT_NEXT, folder / CHECKPOINT)


def remove_checkpoints(folder: Path) -> None:
    for name in (CHECKPOINT, CHECKPOINT_NEXT):
        (folder / name).unlink(missing_ok=True)


def load_checkpoint(path: Path, lazy: bool = False) -> dict[str, Any] | None:
    """A checkpoint, loaded safely (weights_only), or None when absent; raises ValueError naming
    the problem when it is damaged. `lazy` maps tensors from the file instead of reading them."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=lazy)
    except FileNotFoundError:
        return None
    except Exception as exc:  # torch raises many kinds on a torn or foreign file
        raise ValueError(f"{exc.__class__.__name__}: {exc}".splitlines()[0][:100]) from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise ValueError("not a checkpoint of this tool")
    return state
