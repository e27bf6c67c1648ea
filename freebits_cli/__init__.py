"""freebits: free-bits x KL-annealing sweeps for VAEs.

The Python API (`import freebits_cli as fb`): `fb.load_runs(path)`, `fb.load_curves(path)`,
`fb.load_kl(path)` read a results folder into pandas tables (see freebits_cli.api). They are
imported on first use, so importing the package (and `freebits --help`) stays instant.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_curves", "load_kl", "load_runs"]

_API = {"load_runs", "load_curves", "load_kl"}


def __getattr__(name: str) -> Any:  # PEP 562: the API module loads on first use
    if name in _API:
        from freebits_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'freebits_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
