"""The values of a spec's nested mappings: YAML values coerced to a field's annotated type, and
dotted paths (`model.hidden`) into the mappings. Errors name the field at fault (SpecError)."""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Any

from freebits_cli.errors import SpecError
from freebits_cli.spec.validation import suggest


class Kwargs(dict):  # type: ignore[type-arg]
    """A plain mapping of JSON values that can be hashed, so configs holding it can key packs."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))


def coerce(value: Any, kind: Any, where: str) -> Any:
    """Convert a YAML value to the field's annotated type, or raise a SpecError naming the field."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return coerce(value, inner, where)
    if origin is tuple:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise SpecError(where, f"expected a list, got {value!r}")
        return tuple(
            coerce(v, typing.get_args(kind)[0], f"{where}[{i}]") for i, v in enumerate(value)
        )
    if kind is Kwargs:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise SpecError(where, f"expected a mapping of keyword arguments, got {value!r}")
        try:
            return Kwargs(json.loads(json.dumps(value, allow_nan=False)))
        except (TypeError, ValueError):
            msg = f"values must be numbers, strings, lists or maps: {value!r}"
            raise SpecError(where, msg) from None
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(where, f"expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _expected("true or false", value, where)
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # exact, however large
        if not isinstance(value, float | str):
            raise _expected("an integer", value, where)
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise _expected("an integer", value, where) from None
        if not number.is_integer():
            raise _expected("an integer", value, where)
        return int(number)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _expected("a number", value, where)
        try:
            return float(value) + 0.0  # folds -0.0 into 0.0: one run id per value
        except (ValueError, OverflowError):
            raise _expected("a number", value, where) from None
    if kind is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _expected("a string", value, where)
        return str(value)
    raise AssertionError(f"unsupported field type {kind}")  # pragma: no cover


def _expected(what: str, value: Any, where: str) -> SpecError:
    """`expected a number, got …`, with the likely fix when the value looks like a list."""
    message = f"expected {what}, got {value!r}"
    if isinstance(value, str) and "," in value:  # `lambda: 0, 0.5, 1` is one YAML string
        items = ", ".join(item.strip() for item in value.split(","))
        message += f"; a list is written in brackets in YAML: [{items}]"
    elif isinstance(value, list | tuple):  # a list where one value goes: a sweep, misplaced
        message += (
            f"; to sweep {where} over several values, list them under grid: "
            f"(grid: {{{where}: {json.dumps(list(value), default=str)}}})"
        )
    return SpecError(where, message)


def get_path(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        node = node[part]
    return node


def _field_hint(tree: dict[str, Any], name: str) -> str:
    """` (did you mean 'train.lr'?)` for `lr`: the section fields whose name is `name` (or close
    to it), as a full path; the grid's aliases are not offered (they name fields already)."""
    fields = {
        f"{section}.{key}": key
        for section, node in tree.items()
        if isinstance(node, dict) and section != "grid"
        for key in node
    }
    exact = [path for path, key in fields.items() if key == name]
    if not exact:
        close = set(difflib.get_close_matches(name, set(fields.values()), n=1))
        exact = [path for path, key in fields.items() if key in close]
    if not exact:
        return ""
    return " (did you mean " + " or ".join(f"'{p}'" for p in exact) + "?)"


def set_path(tree: dict[str, Any], path: str, value: Any, prefix: str = "") -> None:
    """Set `a.b.c` in a nested dict, naming the path (with a suggestion) when it does not exist."""
    parts = path.split(".")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise SpecError(prefix + where, f"unknown section{suggest(part, list(node))}")
        node = child
    if parts[-1] not in node:
        hint = suggest(parts[-1], list(node)) or _field_hint(tree, parts[-1])
        if parts[0] == "slurm":
            hint += "; valid keys: " + ", ".join(sorted(node))
        raise SpecError(prefix + path, f"unknown field{hint}")
    node[parts[-1]] = value
