"""Domain errors. Library modules raise these; only `cli` turns them into messages and exit codes."""

from __future__ import annotations


class FreebitsError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""

    exit_code = 1


class SpecError(FreebitsError):
    """A bad sweep spec, flag or `--set` override (exit code 2)."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        text = f"{field}: {message}" if field else message
        # Keys and values come from the user: a newline in one must not split the error line.
        super().__init__(text.replace("\r", "\\r").replace("\n", "\\n"))


class SpecErrors(SpecError):
    """Several fields of one spec at fault, reported together: one line per field (exit code 2)."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        self.field = errors[0].field
        # As a library error it reads as all of them; the command line prints `errors` one a line.
        FreebitsError.__init__(self, "; ".join(str(e) for e in errors))


class DataError(FreebitsError):
    """A data set that cannot be found or read (exit code 2)."""

    exit_code = 2


class ResultsError(FreebitsError):
    """A results folder that cannot be read or holds nothing to report (exit code 2)."""

    exit_code = 2


class TrainingError(FreebitsError):
    """A failure while training that is not a single run's divergence (exit code 1)."""

    exit_code = 1


class Interrupted(FreebitsError):
    """SIGTERM or SIGINT: the sweep stopped at a clean point (exit 128 + signal number)."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name}; completed epochs are saved, run the same command again to resume"
        )
