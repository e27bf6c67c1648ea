"""`freebits sweep --log`: export a sweep while it trains, off the training path.

The trainer's per-epoch callback only sets a flag (`epoch_done`); a background thread then reads
the run folders (what the epoch just committed) and writes what is new, with the same exporter as
`freebits export`. Requests arriving while it writes are merged into one. A failure of the
logging library or its store is reported through `warn` (once per distinct message) and never
reaches the trainer; `close` writes the last epochs and the finished runs, then stops the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from freebits_cli.export import Target, export_runs, open_targets


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


class LiveExport:
    """Exports the runs of sweep `sweep` below `results_dir` after each `epoch_done` call."""

    def __init__(
        self,
        results_dir: Path,
        sweep: str,
        targets: Sequence[Target],
        warn: Callable[[str], None],
    ) -> None:
        self.results_dir, self.sweep, self.targets = Path(results_dir), sweep, list(targets)
        self._warn = warn
        self._said: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writers: list[Any] | None = None
        self._thread = threading.Thread(target=self._loop, name="freebits-export", daemon=True)
        self._thread.start()

    def epoch_done(self, *_: object) -> None:
        """Called by the trainer after an epoch's rows are committed: cheap, never raises."""
        self._wake.set()

    def close(self) -> None:
        """Write what is still new, then stop (waiting for the thread)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._export_once()
            if self._stop.is_set():
                self._export_once()  # the last epochs and the runs finished meanwhile
                break
        for writer in self._writers or []:
            self._guard(writer.close, writer.name)

    def _export_once(self) -> None:
        if self._writers is None:
            try:
                self._writers = open_targets(self.targets, self.results_dir, live=True)
            except Exception as exc:
                self._note(f"--log: cannot open the export targets ({_why(exc)}); training goes on")
                return
        for writer in self._writers:  # one target failing does not hold back the other

            def write(writer: object = writer) -> None:
                # A CSV line the trainer is writing may look torn for a moment: no warnings
                # from reading here, the next export reads it whole.
                export_runs(self.results_dir, [writer], lambda _: None, self.sweep)

            self._guard(write, writer.name)

    def _guard(self, action: Callable[[], object], name: str = "export") -> None:
        try:
            action()
        except Exception as exc:  # whatever the library raises, training goes on
            self._note(f"--log {name}: export failed ({_why(exc)}); training goes on")

    def _note(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._warn(message)
