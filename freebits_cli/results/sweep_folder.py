"""One sweep folder, one spec: what a new spec may change under an existing sweep name.

A sweep grows by adding values to its grid (more λ values or seeds); anything else that shapes a
run's numbers (epochs, learning rate, architecture, …) would put runs of two experiments side by
side under one name, and a report would average them as if they were seeds. Fields that do not
shape the numbers (where the data lives, which device, how jobs are submitted) may change freely.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from freebits_cli.errors import SpecError
from freebits_cli.schema import SPEC_FILE, SUBMISSION_SECTIONS, placement_fields
from freebits_cli.spec import GRID_ALIASES, RunConfig, SweepSpec


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out |= (
                _flat(value, f"{prefix}{key}.")
                if isinstance(value, dict)
                else {f"{prefix}{key}": value}
            )
    return out


def _run_fields(tree: dict[str, Any]) -> dict[str, Any]:
    """Dotted field -> value for the sections a run is made of (others, e.g. `slurm:`, ignored)."""
    sections = {f.name for f in dataclasses.fields(RunConfig)}
    return _flat({k: v for k, v in tree.items() if k in sections})


def _grid(tree: dict[str, Any]) -> dict[str, list[Any]]:
    grid = tree.get("grid") if isinstance(tree.get("grid"), dict) else {}
    return {
        GRID_ALIASES.get(str(k), str(k)): v if isinstance(v, list) else [v] for k, v in grid.items()
    }


def read_saved(sweep_dir: Path) -> dict[str, Any] | None:
    """The spec a sweep folder was run with, as a mapping; None when there is none."""
    path = sweep_dir / SPEC_FILE
    if not path.exists():
        return None
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        tree = None
    if not isinstance(tree, dict):
        raise SpecError(
            str(path),
            "the sweep's saved spec is unreadable, so a change cannot be ruled out; "
            "use --name for a new sweep, or --force to replace this one",
        )
    return tree


def changes(saved: dict[str, Any], spec: SweepSpec) -> list[str]:
    """`field: old -> new` for each field that shapes runs and differs (grid values excepted)."""
    new = spec.to_dict()
    swept = set(_grid(saved)) | set(_grid(new))
    old_fields, new_fields = _run_fields(saved), _run_fields(new)
    placement = placement_fields(new_fields.get("dataset.name"))
    out = []
    for path, value in new_fields.items():
        if path in swept or path in placement or path.startswith(SUBMISSION_SECTIONS):
            continue
        if path not in old_fields:
            continue  # a field the saved spec lacks was added since, with its old behaviour
        if old_fields[path] != value:
            out.append(f"{path}: {old_fields[path]!r} -> {value!r}")
    return out


def check_unchanged(sweep_dir: Path, spec: SweepSpec) -> None:
    """Refuse (SpecError, exit 2) a spec that would change the runs of an existing sweep."""
    saved = read_saved(sweep_dir)
    if saved is None:
        return
    changed = changes(saved, spec)
    if changed:
        raise SpecError(
            "spec",
            f"sweep {spec.name!r} in {sweep_dir} was run with another spec ({'; '.join(changed)}); "
            "use --name for a new sweep, or --force to replace this one",
        )


def grown(sweep_dir: Path, spec: SweepSpec) -> SweepSpec:
    """`spec` with each grid field's values joined to those the folder's spec already had, so
    spec.yaml keeps describing every run in the folder (a sweep grows, it is not narrowed)."""
    saved = read_saved(sweep_dir)
    if saved is None:
        return spec
    old_grid, old_fields, new_fields = _grid(saved), _run_fields(saved), _run_fields(spec.to_dict())
    paths = {GRID_ALIASES.get(k, k): k for k in spec.grid}
    grid = {k: list(v) for k, v in spec.grid.items()}
    for path, values in old_grid.items():
        key = paths.get(path, path)
        current = grid.get(key, [new_fields.get(path)])
        for value in values:
            if value not in current:
                current.append(value)
        grid[key] = current
    for path, key in paths.items():  # a field swept now but not before: keep the old base value
        if path not in old_grid and path in old_fields and old_fields[path] not in grid[key]:
            grid[key].append(old_fields[path])
    return dataclasses.replace(spec, grid=grid)
