"""Kills between a sweep's writes, for the resume tests of every layer: each write the trainer
makes is counted, and the sweep is stopped just before write N, as a kill there would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from freebits_cli.results import records, storage

WRITES = {  # (module, function) of every write the trainer makes
    (storage, "_atomic_write_bytes"),
    (storage, "append_rows"),
    (storage, "promote_checkpoint"),
    (storage, "remove_checkpoints"),
    (records, "write_samples"),
}


class Kill(BaseException):
    """Not an Exception: nothing on the way up may catch it, as nothing can catch a kill."""


def count_writes(monkeypatch: pytest.MonkeyPatch, kill_at: int | None) -> list[str]:
    """Log every write (function and file name) from now on; raise Kill before write `kill_at`."""
    log: list[str] = []
    for module, name in WRITES:
        real = getattr(module, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            log.append(f"{_name}({Path(str(args[0])).name})")
            if kill_at is not None and len(log) == kill_at:
                raise Kill
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return log
