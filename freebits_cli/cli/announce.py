"""What `freebits sweep` says before it trains: runs it resumes, and runs `--force` deletes."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ..errors import FreebitsError

#: Run ids listed in full before the rest is counted ("…").
SHOWN_IDS = 5


class Declined(FreebitsError):
    """The user answered no to deleting runs (exit 1, nothing changed)."""


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def some_ids(ids: Sequence[str]) -> str:
    """The first SHOWN_IDS ids, then "… (N more)"."""
    shown = ", ".join(ids[:SHOWN_IDS])
    return shown + (f", … ({len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else "")


def resume_lines(todo: Sequence[Any]) -> list[str]:
    """`resuming 4 runs from epoch 4 (of 8)`, one line per (start, epochs)."""
    starts = Counter(
        (item.start_epoch, item.run.train.epochs)
        for item in todo
        if item.state == "interrupted" and item.start_epoch
    )
    return [
        f"resuming {plural(n, 'run')} from epoch {start} (of {epochs})"
        for (start, epochs), n in sorted(starts.items())
    ]


def shared_plain_runs(spec: Any) -> str | None:
    """A note when the grid sweeps free-bits modes and λ = 0: that run is trained once."""
    runs = spec.expand()
    modes = list(dict.fromkeys(r.free_bits.mode for r in runs))
    plain = sum(r.free_bits.lam == 0 for r in runs)
    if len(modes) < 2 or not plain:
        return None
    return (
        f"λ = 0 is the plain VAE in every free-bits mode: its {plural(plain, 'run')} "
        f"(labelled {modes[0]}) stand for modes {', '.join(modes)}, trained once each"
    )


def interactive() -> bool:
    """Whether a person can answer a question (stdin and stderr are a terminal)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def force_deletions(
    say: Console,
    retrained: Sequence[str],
    dropped: Sequence[Path],
    dry_run: bool,
    yes: bool,
) -> None:
    """Say which complete runs --force trains again and which run folders it deletes; on a
    terminal, ask before deleting runs this command does not train again (unless --yes)."""
    if retrained:
        verb = "would train" if dry_run else "trains"
        say.print(
            f"--force {verb} {plural(len(retrained), 'complete run')} again from scratch, "
            f"replacing their results: {some_ids(retrained)}",
            highlight=False,
            soft_wrap=True,
        )
    if not dropped:
        return
    verb = "would delete" if dry_run else "deletes"
    say.print(
        f"--force with a changed spec replaces the sweep and {verb} "
        f"{plural(len(dropped), 'run')} the new spec does not have: "
        f"{some_ids([f.name for f in dropped])}",
        highlight=False,
        soft_wrap=True,
    )
    if dry_run or yes or not interactive():
        return
    if not typer.confirm(f"Delete {plural(len(dropped), 'run')}?", default=False, err=True):
        raise Declined("nothing deleted or trained (answer y, or pass --yes, to delete them)")
