"""Per-run locks: one process trains a run at a time, and the OS frees the lock when it dies.

A lock is an exclusive `flock` on `<run folder>/.lock`, taken before anything else of the run is
written or reset. The file holds `host pid` of the holder, so `status` can say who trains it. The
file itself is never deleted (a reset keeps it): deleting a locked file would let a second process
lock a fresh file of the same name while the first still holds the old one.

On NFS, Linux emulates `flock` with byte-range locks served by the NFS lock manager, so locks hold
across machines when the mount supports locking (not with `nolock` or `local_lock=flock`, which keep
them per machine). Other shared filesystems (Lustre, GPFS, CephFS) follow their own mount options.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOCK = ".lock"
#: How long an attempt retries before calling a run busy: `status` probes locks for an instant.
GRACE_SECONDS = 0.5


@dataclass
class RunLock:
    """A held lock; `release()` (or the holder's death) frees it."""

    folder: Path
    handle: IO[str] | None

    def release(self) -> None:
        if self.handle is None:
            return
        try:
            self.handle.truncate(0)
            self.handle.flush()
        except OSError:  # a full disk must not keep the lock held
            pass
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None


def _open(folder: Path) -> IO[str]:
    folder.mkdir(parents=True, exist_ok=True)
    # "a+": create if missing, never truncate a file someone else may hold.
    return open(folder / LOCK, "a+")


def try_lock(folder: Path, grace: float = GRACE_SECONDS) -> RunLock | None:
    """Lock `folder`'s run for this process, or None when another process holds it."""
    handle = _open(folder)
    deadline = time.monotonic() + grace
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                return None
            time.sleep(0.05)
    handle.seek(0)
    handle.truncate(0)
    handle.write(f"{socket.gethostname()} {os.getpid()}\n")
    handle.flush()
    return RunLock(folder, handle)


def holder(folder: Path) -> str | None:
    """`host/pid` of the process holding `folder`'s lock, or None when nobody holds it."""
    try:
        handle = open(folder / LOCK)  # noqa: SIM115 - closed below, after the probe
    except OSError:
        return None
    with handle:
        try:
            # A shared lock is granted unless someone holds the exclusive one; released at once.
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            words = handle.read().split()
            return "/".join(words[:2]) if words else "another process"
        except OSError:
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def wait_until_free(folders: Iterable[Path], check: Callable[[], None], poll: float = 0.5) -> None:
    """Block until no other process holds any of `folders`' locks; `check` may raise to stop."""
    waiting = list(folders)
    while waiting:
        check()
        waiting = [f for f in waiting if holder(f) is not None]
        if waiting:
            time.sleep(poll)
