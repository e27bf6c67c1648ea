"""Which config fields tell the report's settings apart: every one that varies but the seed.

Runs are pooled as seeds of one setting only when their configs agree on everything else. A grid
names what a sweep varies, but a folder may also hold runs of an older spec (another epoch count
or learning rate under the same sweep name): those fields become setting columns too, labelled by
their dotted path, and a warning says the sweep mixes specs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from freebits_cli.schema import LABEL_FIELDS, SEED_FIELD, SUBMISSION_SECTIONS, placement_fields


def flat_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted field -> value of a run's config; lists as JSON text, so they can be group keys."""
    out: dict[str, Any] = {}
    for name, value in tree.items() if isinstance(tree, dict) else ():
        if isinstance(value, dict):
            out |= flat_config(value, f"{prefix}{name}.")
        else:
            out[f"{prefix}{name}"] = json.dumps(value) if isinstance(value, list) else value
    return out


def _setting_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """The fields of a flat config that may tell settings apart: not where it was computed, nor
    how its jobs were submitted (the seed and the labels are left out by the caller)."""
    placement = placement_fields(cfg.get("dataset.name"))
    return {
        p: v for p, v in cfg.items() if p not in placement and not p.startswith(SUBMISSION_SECTIONS)
    }


def _text(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def split_by_config(
    rows: list[dict[str, Any]], configs: Mapping[str, dict[str, Any]], warnings: list[str]
) -> list[str]:
    """Add to each row (keyed by its "path") a column per config field that varies across the
    runs; warn for each sweep whose runs differ in fields its grid does not sweep. Returns the
    fields added."""
    configs = {key: _setting_fields(cfg) for key, cfg in configs.items()}
    known = [cfg for cfg in configs.values() if cfg]  # a run without config.json tells nothing
    paths = sorted({p for cfg in known for p in cfg} - {SEED_FIELD, *LABEL_FIELDS})
    varying = [p for p in paths if len({_text(cfg.get(p)) for cfg in known}) > 1]
    swept: dict[str, set[str]] = {}
    for row in rows:  # grid fields of each sweep, from the runs' recorded settings
        swept.setdefault(row["sweep"], set()).update(c for c in row if "." in c)
    for row in rows:
        cfg = configs.get(row["path"], {})
        for path in varying:
            if path not in row:
                row[path] = cfg.get(path)
    for sweep, grid in swept.items():
        members = [configs.get(r["path"]) for r in rows if r["sweep"] == sweep]
        members = [cfg for cfg in members if cfg]
        mixed = [
            p for p in varying if p not in grid and len({_text(cfg.get(p)) for cfg in members}) > 1
        ]
        if mixed:
            warnings.append(
                f"sweep {sweep}: its runs were trained with different specs "
                f"({', '.join(mixed)} differ); they are kept apart, not pooled as seeds"
            )
    return varying
