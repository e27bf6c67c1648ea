"""The `freebits` command line (Typer): `sweep`, `status`, `report`, `--version`.

Each command lives in its own module and registers itself on `app`."""

from . import report, status, sweep
from .app import app

__all__ = ["app", "report", "status", "sweep"]
