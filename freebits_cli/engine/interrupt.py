"""Stop a sweep cleanly on SIGTERM or SIGINT.

The first signal is only recorded: the trainer checks it between optimisation steps, abandons the
epoch in progress (its runs resume from the last complete epoch's checkpoints, so the numbers stay
exact), releases its locks and exits non-zero. A second signal exits at once. A worker process also
stops when the parent that started it is gone, so no worker trains on behind a killed sweep.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from freebits_cli.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: int | None = None
_parent: int | None = None


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:
        os._exit(128 + signum)  # a second signal: the user wants out now
    _received = signum


@contextmanager
def handling_signals() -> Iterator[None]:
    """Record SIGTERM/SIGINT instead of dying mid-write, for the duration of the block."""
    global _received
    _received = None
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        _received = None


def watch_parent(pid: int) -> None:
    """In a worker process: treat the death of process `pid` (our parent) as a SIGTERM."""
    global _parent
    _parent = pid


def received() -> int | None:
    """The signal number that asked us to stop, or None."""
    if _received is None and _parent is not None and os.getppid() != _parent:
        return signal.SIGTERM
    return _received


def check() -> None:
    """Raise `Interrupted` if a stop was asked for; called between optimisation steps."""
    signum = received()
    if signum is not None:
        raise Interrupted(signum)
