"""The `freebits` command line (Typer): `sweep`, `status`, `report`, `export`, `--version`.

Each command lives in its own module and registers itself on `app`."""

from . import export, report, status, sweep
from .app import app

__all__ = ["app", "export", "report", "status", "sweep"]
