"""`import freebits` is `import freebits_cli` under the distribution's name, for notebooks:
`fb.load_runs`, `fb.load_curves`, `fb.load_kl`, `fb.__version__`."""

from __future__ import annotations

from typing import Any

import freebits_cli

__version__ = freebits_cli.__version__
__all__ = freebits_cli.__all__


def __getattr__(name: str) -> Any:
    return getattr(freebits_cli, name)


def __dir__() -> list[str]:
    return dir(freebits_cli)
