"""Spec files and overrides: YAML in, flags and `--set key.path=value` applied, YAML out."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml

from freebits_cli.errors import SpecError
from freebits_cli.spec.config import GRID_ALIASES, SweepSpec, parse_spec, set_path
from freebits_cli.spec.validation import FieldErrors


def load_yaml(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(str(path), "spec file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"cannot read spec file ({exc.__class__.__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(str(path), f"invalid YAML{where}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` -> (path, YAML-parsed value)."""
    if "=" not in text:
        raise SpecError("--set", f"{text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise SpecError(f"--set {key}", f"cannot parse value {raw!r}") from None
    return key, value


def build_spec(
    spec_file: Path | None, overrides: typing.Sequence[tuple[str, Any]] = ()
) -> SweepSpec:
    """Load a spec (or the defaults), apply overrides in order, and validate the result."""
    raw = load_yaml(spec_file) if spec_file is not None else {}
    if raw is None:  # an empty file: most likely a mistake, never "run the default sweep"
        raise SpecError(str(spec_file), "the spec file is empty")
    if not isinstance(raw, dict):
        raise SpecError(str(spec_file), "a spec must be a YAML mapping of sections")
    tree = SweepSpec().to_dict()
    for section, value in raw.items():
        if section in tree and isinstance(tree[section], dict) and isinstance(value, dict):
            if section == "grid":
                tree["grid"] = dict(value)
            else:
                tree[section].update(value)
        else:
            tree[section] = value
    found = FieldErrors()  # a bad --set does not hide the spec's other errors
    for path, value in overrides:
        if path == "name":
            tree["name"] = value
            continue
        grid = tree.get("grid")
        if not isinstance(grid, dict):
            tree["grid"] = grid = {}
        if path.startswith("grid."):
            key = path.removeprefix("grid.")
            _drop_grid_path(grid, GRID_ALIASES.get(key, key))
            grid[key] = value
        else:
            with found.gather():
                # A single explicit value for a swept field replaces the sweep over it.
                set_path(tree, path, value, prefix="--set ")
                _drop_grid_path(grid, path)
    with found.gather():
        spec = parse_spec(tree, source=str(spec_file or "defaults"))
    found.raise_any()
    return spec


def _drop_grid_path(grid: dict[str, Any], path: str) -> None:
    for key in [k for k in grid if GRID_ALIASES.get(str(k), str(k)) == path]:
        del grid[key]


def dump_spec(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
