"""The `freebits` app, its consoles, and how a command's errors become one line and an exit code.

The command line is the only part of freebits that prints; heavy imports happen inside commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import FreebitsError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train grids of VAEs over free-bits thresholds λ and KL-annealing schedules; report them.",
)
# In a terminal tables fit its width; in a pipe or a cluster log nothing is cut (Rich would
# otherwise assume 80 columns and truncate run ids).
_WIDE = 1000
console = Console(width=None if sys.stdout.isatty() else _WIDE)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)


def _version(value: bool) -> None:
    if not value:
        return
    import torch

    from .. import __version__

    cuda = torch.version.cuda or "none"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    console.print(
        f"freebits {__version__}, torch {torch.__version__}, CUDA {cuda} ({gpus} GPU(s) visible)",
        highlight=False,
    )
    raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Versions of freebits, torch, CUDA.",
    ),
) -> None:
    """Train grids of VAEs over free-bits thresholds λ and KL-annealing schedules; report them."""


def fail(message: str, code: int) -> None:
    message = escape(" ".join(message.splitlines()))  # one line; [brackets] kept as text
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


RESUME_HINT = "interrupted; completed epochs are saved, run the same command again to resume"


def guarded(action: Callable[[], int], interrupted: str = RESUME_HINT) -> None:
    """Run a command body; domain errors become one line and an exit code, never a traceback."""
    try:
        code = action()
    except FreebitsError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail(interrupted, 130)
    except Exception as exc:
        if os.environ.get("FREEBITS_DEBUG"):
            raise
        fail(f"{exc.__class__.__name__}: {exc} (set FREEBITS_DEBUG=1 for a traceback)", 1)
    else:
        raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
