"""The freebits trainers running on this machine and the cores each uses, so sweeps share cores.

One small JSON file per host under the user's runtime folder (`$XDG_RUNTIME_DIR/freebits`, else
the cache folder `$XDG_CACHE_HOME/freebits` or `~/.cache/freebits`): {pid: {cores, started}}, read
and written under an `fcntl` lock. A sweep registers the cores it takes at each pack start and
leaves when it ends; entries of processes that died (or whose pid now names another process, told
by its start time) are pruned by whoever reads next. The same file records the start-up time last
measured for a worker process on this machine (`cores.Timing.startup`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FOLDER = "freebits"


def folder() -> Path:
    """Where the registry lives: the runtime folder when there is one, else the cache folder."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return Path(runtime) / FOLDER
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / FOLDER


def _file() -> Path:
    # Per host: a home folder shared over the network holds the registries of many machines.
    return folder() / f"trainers-{socket.gethostname()}.json"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        if not Path("/proc").is_dir():  # no /proc: ask the OS whether the pid lives
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return 0
        return None


def _alive(pid: int, entry: dict[str, Any]) -> bool:
    started = start_time(pid)
    return started is not None and entry.get("started") in (None, started)


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, Any]]:
    """The registry, read under an exclusive lock, pruned of dead processes, written back."""
    path = _file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                data = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                data = {}  # missing or torn: start a new one
            trainers = data.get("trainers", {}) if isinstance(data, dict) else {}
            data = {
                "trainers": {p: e for p, e in trainers.items() if _alive(int(p), e)},
                **({"startup_s": data["startup_s"]} if "startup_s" in data else {}),
            }
            yield data
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _safely(default: Any) -> Any:
    """The registry is advice: a folder that cannot be written leaves each sweep on its own."""

    def wrap(fn: Any) -> Any:
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except OSError:
                return default

        return inner

    return wrap


@_safely(default=[])
def others(pid: int | None = None) -> list[int]:
    """The cores each other live freebits trainer on this machine uses (stale entries pruned)."""
    pid = os.getpid() if pid is None else pid
    with _locked() as data:
        return [int(e["cores"]) for p, e in data["trainers"].items() if int(p) != pid]


@_safely(default=None)
def register(cores: int, pid: int | None = None) -> None:
    """Say that `pid` (this process) trains on `cores` cores now."""
    pid = os.getpid() if pid is None else pid
    with _locked() as data:
        data["trainers"][str(pid)] = {"cores": cores, "started": start_time(pid)}


@_safely(default=None)
def leave(pid: int | None = None) -> None:
    pid = os.getpid() if pid is None else pid
    with _locked() as data:
        data["trainers"].pop(str(pid), None)


@_safely(default=None)
def startup() -> float | None:
    """The start-up of a worker process last measured on this machine, in seconds."""
    with _locked() as data:
        return data.get("startup_s")


@_safely(default=None)
def record_startup(seconds: float) -> None:
    with _locked() as data:
        data["startup_s"] = round(seconds, 3)


@contextlib.contextmanager
def registered(cores: int) -> Iterator[None]:
    """This process is in the registry with `cores` cores for the block (updated by `register`);
    0: not at all (a GPU sweep)."""
    if not cores:
        yield
        return
    register(cores)
    try:
        yield
    finally:
        leave()
