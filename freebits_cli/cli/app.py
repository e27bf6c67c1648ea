"""The `freebits` app, its consoles, and how a command's errors become one line and an exit code.

The command line is the only part of freebits that prints; heavy imports happen inside commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ..errors import FreebitsError
from ..sweep.cores import brief_spin
from .flags import LIST_FLAGS

try:  # newer typer ships its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import ClickException, NoArgsIsHelpError

#: The command line being run, for hints on errors that only show up after parsing.
_ARGS: list[str] = []


class _OneLineErrors(TyperGroup):
    """The parser's errors as one line and exit 2, like every other error (not a framed box)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _ARGS[:] = sys.argv[1:] if args is None else list(args)
        brief_spin()  # before any command loads torch (and its OpenMP runtime)
        try:
            code = super().main(_ARGS, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # `freebits` alone: the help, as click shows it
            exc.show()
            code = exc.exit_code
        except ClickException as exc:
            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            see = f" (see {where} --help)" if where else ""
            _print_error(f"{exc.format_message()}{see}")
            code = exc.exit_code
        except typer.Abort:
            _print_error("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code or 0)


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    # Plain help: flags are listed without a value placeholder (Rich's panels show `<bool>`).
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train grids of VAEs over free-bits thresholds λ and KL-annealing schedules; report them.",
)
# In a terminal tables fit its width; in a pipe or a cluster log nothing is cut (Rich would
# otherwise assume 80 columns and truncate run ids).
_WIDE = 1000


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """A closed pipe ends the command quietly (see `guarded`), not with Rich's exit 1."""
        self.quiet = True
        raise BrokenPipeError


# Markup off: what is printed holds user text (paths, names, failure reasons) and derived text
# such as "[low, high]", which Rich would otherwise read as tags and swallow. Styled words are
# built as `Text` (see `labelled`), never by markup in a string.
console = _Console(markup=False, width=None if sys.stdout.isatty() else _WIDE)
err_console = _Console(markup=False, stderr=True, width=None if sys.stderr.isatty() else _WIDE)


def labelled(label: str, style: str, message: str) -> Text:
    """`label` in `style`, then `message` as plain text (brackets and all)."""
    return Text.assemble((label, style), " ", message)


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


def list_hint(args: Sequence[str]) -> str:
    """ "; write --lambdas 0,0.5,1 (no spaces)" when a list flag's items were typed with spaces
    (the shell then hands the items after the first over as other arguments), else ""."""
    for i, flag in enumerate(args[:-1]):
        if flag not in LIST_FLAGS:
            continue
        value, rest = args[i + 1], []
        for token in args[i + 2 :]:
            if token.startswith("--"):
                break
            separated = value.endswith(",") or token.startswith(",") or bool(rest)
            if not separated and not _list_item(token):
                break  # e.g. a spec file after the list
            rest.append(token)
        if rest:
            items = [x for x in ",".join([value, *rest]).split(",") if x.strip()]
            return f"; write {flag} {','.join(x.strip() for x in items)} (no spaces)"
    return ""


#: Words a list flag takes (schedules, free-bits modes) besides numbers.
_LIST_WORDS = {
    "none",
    "constant",
    "linear",
    "sigmoid",
    "cyclical",
    "batch",
    "example",
    "total",
    "group",
    "example_total",
}


def _list_item(token: str) -> bool:
    item = token.strip(",")
    if item in _LIST_WORDS:
        return True
    try:
        float(item)
    except ValueError:
        return False
    return not Path(token).exists()


def _print_error(message: str) -> None:
    message = " ".join(message.split())  # one line
    err_console.print(
        labelled("error:", "bold red", message + list_hint(_ARGS)), highlight=False, soft_wrap=True
    )


def fail(message: str, code: int) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _silence_stdout() -> None:
    """After a closed pipe (`… | head`), point stdout at /dev/null so that the interpreter's
    last flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test runner's buffer): nothing is flushed to a pipe


#: A closed pipe stops a command quietly with the status a shell gives SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


RESUME_HINT = "interrupted; completed epochs are saved, run the same command again to resume"


def guarded(action: Callable[[], int], interrupted: str = RESUME_HINT) -> None:
    """Run a command body; domain errors become one line and an exit code, never a traceback."""
    try:
        code = action()
    except BrokenPipeError:  # the reader went away (`| head`): normal in a shell, not an error
        _silence_stdout()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except FreebitsError as exc:
        for each in getattr(exc, "errors", [])[:-1]:  # several fields at fault: one line each
            _print_error(str(each))
        fail(str(getattr(exc, "errors", [exc])[-1]), exc.exit_code)
    except KeyboardInterrupt:
        fail(interrupted, 130)
    except Exception as exc:
        if os.environ.get("FREEBITS_DEBUG"):
            raise
        fail(f"{exc.__class__.__name__}: {exc} (set FREEBITS_DEBUG=1 for a traceback)", 1)
    else:
        raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(labelled("warning:", "yellow", message), highlight=False, soft_wrap=True)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
