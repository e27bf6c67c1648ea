"""`sweep`'s flags as spec overrides: comma lists for the grid, single values, `--set`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import SpecError

#: The flags that take a comma list, and the grid field each one sets.
LIST_FLAGS = {
    "--lambdas": "grid.lambda",
    "--anneal": "grid.anneal",
    "--seeds": "grid.seed",
    "--free-bits-mode": "grid.mode",
}


def _list_flag(name: str, text: str | None) -> list[Any] | None:
    import yaml

    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise SpecError(name, f"{text!r} has an empty item; use a comma list like 0,0.5,1")
    try:
        return [yaml.safe_load(item) for item in items]
    except yaml.YAMLError:
        raise SpecError(name, f"cannot parse {text!r}; use a comma list like 0,0.5,1") from None


def flag_overrides(
    lambdas: str | None,
    anneal: str | None,
    seeds: str | None,
    modes: str | None,
    singles: dict[str, Any],
    sets: Sequence[str],
) -> list[tuple[str, Any]]:
    from freebits_cli.spec.files import parse_override

    out: list[tuple[str, Any]] = []
    for (flag, path), text in zip(LIST_FLAGS.items(), (lambdas, anneal, seeds, modes), strict=True):
        values = _list_flag(flag, text)
        if values is not None:
            out.append((path, values))
    out += [(path, value) for path, value in singles.items() if value is not None]
    out += [parse_override(text) for text in sets]
    return out
