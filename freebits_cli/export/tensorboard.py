"""TensorBoard: one TensorBoard run per freebits run, in LOGDIR/<sweep>/<run-id>/.

Written with PyTorch's SummaryWriter (TensorBoard's event files) and TensorBoard's own HParams
protos (tensorboard.plugins.hparams.summary_v2), so the HParams dashboard lists the sweep: one
row per finished run, its setting as columns, its final metrics beside them.

Idempotent: each run folder keeps `freebits_export.json` saying which epochs are written and
whether the finished run's session (setting, final metrics, samples) is; running export again
writes only what is new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from freebits_cli.export.source import ExportRun

STATE = "freebits_export.json"


def _state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = folder / f".{STATE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(folder / STATE)


class TensorBoardTarget:
    """Writes runs into `logdir`. With `keep_open` (a live sweep) each run's writer stays open
    until `close()`, so a run's epochs go to one event file rather than one file per epoch."""

    name = "tensorboard"

    def __init__(self, logdir: Path, keep_open: bool = False) -> None:
        self.logdir = Path(logdir).expanduser()
        self.keep_open = keep_open
        self._writers: dict[Path, Any] = {}

    def where(self) -> str:
        return f"{self.logdir} (view: tensorboard --logdir {self.logdir})"

    def _writer(self, folder: Path) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        if folder not in self._writers:
            self._writers[folder] = SummaryWriter(log_dir=str(folder), flush_secs=3600)
        return self._writers[folder]

    def write(self, run: ExportRun) -> tuple[int, int]:
        """Write what is new of `run`: (epochs added, 1 if its finished records were)."""
        folder = self.logdir / run.sweep / run.run_id
        folder.mkdir(parents=True, exist_ok=True)
        state = _state(folder)
        done_epochs, done_kl = int(state.get("epochs", 0)), int(state.get("kl_epochs", 0))
        added, finished = 0, 0
        writer = None
        if run.curves is not None:
            new = run.curves[run.curves["epoch"] > done_epochs]
            columns = run.scalar_columns()
            for _, row in new.iterrows():
                writer = writer or self._writer(folder)
                step = int(row["epoch"])
                for col in columns:
                    if row[col] == row[col]:  # NaN: not measured at this epoch (e.g. IWAE)
                        writer.add_scalar(col, float(row[col]), step)
            added += len(new)
            state["epochs"] = max(done_epochs, run.epochs)
        if run.kl is not None:
            new_kl = run.kl[run.kl["epoch"] > done_kl]
            width = len(str(int(run.kl["dim"].max())))
            for _, row in new_kl.iterrows():
                writer = writer or self._writer(folder)
                dim = str(int(row["dim"])).zfill(width)
                writer.add_scalar(f"kl_per_dim/{dim}", float(row["kl"]), int(row["epoch"]))
            if len(new_kl):
                state["kl_epochs"] = int(run.kl["epoch"].max())
        if run.finished and not state.get("session"):
            self._write_session(self._writer(folder), run)
            state["session"] = run.state
            finished = 1
        if added or finished or writer is not None:
            self._writer(folder).flush()
            _save_state(folder, state)
        if not self.keep_open and folder in self._writers:
            self._writers.pop(folder).close()
        return added, finished

    def _write_session(self, writer: Any, run: ExportRun) -> None:
        """The HParams session (setting + final metrics), the final metrics as `final/*`
        scalars at the last epoch, and the samples."""
        from tensorboard.plugins.hparams import summary_v2 as hp

        step = run.epochs
        for name, value in run.final.items():
            writer.add_scalar(f"final/{name}", value, step)
        # The experiment (which columns the dashboard shows) sits beside each session, as
        # PyTorch's add_hparams does; no value domains, so a sweep may grow later.
        metrics = [hp.Metric(f"final/{name}") for name in run.final]
        config = hp.hparams_config_pb([hp.HParam(k) for k in run.hparams], metrics)
        writer.file_writer.add_summary(config)
        session = hp.hparams_pb(run.hparams, trial_id=f"{run.sweep}/{run.run_id}")
        writer.file_writer.add_summary(session)
        writer.add_text("state", run.state, step)
        for name, image in run.images.items():
            writer.add_image(f"samples/{name}", image, step, dataformats="HWC")
        for name, lines in run.texts.items():
            writer.add_text(f"samples/{name}", "\n\n".join(lines), step)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
