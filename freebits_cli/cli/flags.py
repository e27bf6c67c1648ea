"""`sweep`'s flags as spec overrides: comma lists for the grid, single values, `--set`; and the
notes that say what the command line dropped or overrode (duplicates, two flags on one field)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError

#: The flags that take a comma list, and the grid field each one sets.
LIST_FLAGS = {
    "--lambdas": "grid.lambda",
    "--anneal": "grid.anneal",
    "--seeds": "grid.seed",
    "--free-bits-mode": "grid.mode",
}
#: The flags that set one field, by the field they set.
SINGLE_FLAGS = {
    "train.epochs": "--epochs",
    "dataset.name": "--dataset",
    "dataset.data_dir": "--data-dir",
    "model.latent_dim": "--latent-dim",
    "train.device": "--device",
    "name": "--name",
}


@dataclass(frozen=True)
class Override:
    path: str
    value: Any
    said: str  # as the command line said it, for notes: `--lambdas 0,1`, `--set train.lr=3e-4`


def _list_flag(name: str, text: str | None) -> tuple[list[Any] | None, str | None]:
    """The flag's values, duplicates dropped, and a note naming the ones dropped."""
    import yaml

    if text is None:
        return None, None
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise SpecError(name, f"{text!r} has an empty item; use a comma list like 0,0.5,1")
    try:
        values = [yaml.safe_load(item) for item in items]
    except yaml.YAMLError:
        raise SpecError(name, f"cannot parse {text!r}; use a comma list like 0,0.5,1") from None
    kept: list[Any] = []
    dropped: list[str] = []
    for item, value in zip(items, values, strict=True):
        if value in kept:  # 0 and 0.0 are one value: one run
            dropped.append(item)
        else:
            kept.append(value)
    note = None
    if dropped:
        note = (
            f"{name}: duplicate {'value' if len(dropped) == 1 else 'values'} "
            f"{', '.join(dropped)} dropped; each value is trained once"
        )
    return kept, note


def flag_overrides(
    lambdas: str | None,
    anneal: str | None,
    seeds: str | None,
    modes: str | None,
    singles: dict[str, Any],
    sets: Sequence[str],
) -> tuple[list[tuple[str, Any]], list[str]]:
    """The overrides in the order they apply (list flags, single flags, then each `--set`), and
    one note per duplicate dropped and per field two of them set (the last one wins)."""
    from freebits_cli.spec.files import parse_override

    given: list[Override] = []
    notes: list[str] = []
    for (flag, path), text in zip(LIST_FLAGS.items(), (lambdas, anneal, seeds, modes), strict=True):
        values, note = _list_flag(flag, text)
        if values is not None:
            given.append(Override(path, values, f"{flag} {text}"))
        notes += [note] if note else []
    given += [
        Override(path, value, f"{SINGLE_FLAGS.get(path, path)} {value}")
        for path, value in singles.items()
        if value is not None
    ]
    for text in sets:
        path, value = parse_override(text)
        given.append(Override(path, value, f"--set {text}"))
    return [(o.path, o.value) for o in given], notes + _conflicts(given)


def _field(path: str) -> str:
    from freebits_cli.spec.config import GRID_ALIASES

    key = path.removeprefix("grid.")
    return GRID_ALIASES.get(key, key)


def _conflicts(given: Sequence[Override]) -> list[str]:
    """`--set free_bits.lambda=1 overrides --lambdas 0,1 …`: one line per field set twice."""
    notes = []
    by_field: dict[str, list[Override]] = {}
    for o in given:
        by_field.setdefault(_field(o.path), []).append(o)
    for field, said in by_field.items():
        if len(said) < 2:
            continue
        *lost, won = said
        why = "the later --set wins" if lost[-1].said.startswith("--set") else "--set applies last"
        notes.append(
            f"{won.said} overrides {', '.join(o.said for o in lost)} (both set {field}; {why})"
        )
    return notes
