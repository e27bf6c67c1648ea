"""freebits: free-bits x KL-annealing sweeps for VAEs.

The Python API (`import freebits_cli as fb`): `fb.run_sweep(spec, out, fb.SweepOptions(...))`
trains a sweep as `freebits sweep` does (freebits_cli.sweep.run); `fb.load_runs(path)`,
`fb.load_curves(path)`, `fb.load_kl(path)` read a results folder into pandas tables (see
freebits_cli.api). They are imported on first use, so importing the package (and
`freebits --help`) stays instant.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
#: Each name of the API and the module that defines it.
_API = {
    **dict.fromkeys(("load_runs", "load_curves", "load_kl"), "freebits_cli.api"),
    **dict.fromkeys(
        ("run_sweep", "SweepOptions", "Hooks", "SweepResult"), "freebits_cli.sweep.run"
    ),
    "build_spec": "freebits_cli.spec.files",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:  # PEP 562: the API's modules load on first use
    if name in _API:
        from importlib import import_module

        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'freebits_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
