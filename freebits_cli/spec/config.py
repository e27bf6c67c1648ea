"""Sweep specs as frozen dataclasses: nested mappings -> a validated `SweepSpec` -> `RunConfig`s.

Every section is a frozen dataclass whose fields carry their defaults and a docstring-style comment.
Parsing is generic (driven by the dataclass fields), so a new field needs no new parsing code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from freebits_cli.errors import SpecError
from freebits_cli.schema import placement_fields
from freebits_cli.spec.sections import (
    AnnealSpec,
    DatasetSpec,
    EvalSpec,
    FreeBitsSpec,
    InitSpec,
    ModelSpec,
    PretrainSpec,
    SlurmSpec,
    TrainSpec,
    _validate_slurm,
)
from freebits_cli.spec.validation import FieldErrors, suggest, validate_run
from freebits_cli.spec.values import coerce, get_path, set_path

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

#: Short names accepted in `grid:` for the fields swept most often.
GRID_ALIASES = {
    "lambda": "free_bits.lambda",
    "mode": "free_bits.mode",
    "anneal": "anneal.schedule",
    "seed": "train.seed",
}


#: Fields added since run ids were first published: at their default (which reproduces what the
#: earlier versions computed) they are left out of a run's identity, so adding a field never
#: renames, and so retrains, the runs of an existing results folder.
ADDED_FIELDS: frozenset[str] = frozenset(
    {
        "eval.mi_draws",
        "eval.mi_estimator",
        "eval.mi_batch",
        "eval.probe",
        "eval.probe_features",
        "eval.temperature",
        "model.mu_bn_gamma",
        "train.lr_decay",
        "train.lr_patience",
        "train.lr_factor",
        "train.lr_max_decays",
        "train.lr_decay_start",
        "train.aggressive",
        "train.aggressive_steps",
        "pretrain.epochs",
        "pretrain.reset_decoder",
        "init.from",
    }
)
#: What stands for the image defaults on text (`dataset.name: text`), so `--dataset text` alone
#: trains the text model: field -> (image default, text value).
TEXT_DEFAULTS = {
    "arch": ("mlp", "lstm"),
    "likelihood": ("bernoulli", "categorical"),
    "hidden": ((256, 128), (256,)),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; its hash (placement aside) is the run's identity."""

    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    free_bits: FreeBitsSpec = FreeBitsSpec()
    anneal: AnnealSpec = AnnealSpec()
    eval: EvalSpec = EvalSpec()
    pretrain: PretrainSpec = PretrainSpec()
    init: InitSpec = InitSpec()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _section_to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def identity(self) -> dict[str, Any]:
        """The config without its placement fields: what shapes the run's numbers."""
        return identity_of(self.to_dict())

    @property
    def run_id(self) -> str:
        """Readable prefix + short hash of `identity()`, stable across processes and machines."""
        return self._id(self.identity())

    def _id(self, tree: dict[str, Any]) -> str:
        digest = hashlib.sha1(
            json.dumps(tree, sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()[:6]
        parts = [f"lam{self.free_bits.lam:g}"]
        if self.free_bits.mode != "batch":
            parts.append(self.free_bits.mode)
        parts += [self.anneal.schedule, f"s{self.train.seed}", digest]
        return "-".join(parts)

    def setting(self, grid_paths: typing.Iterable[str]) -> dict[str, Any]:
        """The values of the swept fields for this run, keyed by full field path."""
        return {path: get_path(self.to_dict(), path) for path in grid_paths}


def identity_of(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config mapping (as in config.json) without its placement fields (`schema`), and
    without the ADDED_FIELDS left at their defaults, so results folders of older versions keep
    being recognised."""
    defaults = RunConfig().to_dict()
    tree = {
        k: {**defaults.get(k, {}), **v} if isinstance(v, dict) else v for k, v in config.items()
    }
    dataset = tree.get("dataset") if isinstance(tree.get("dataset"), dict) else {}
    for path in placement_fields(dataset.get("name")):
        section, key = path.split(".")
        if isinstance(tree.get(section), dict):
            tree[section].pop(key, None)
    for path in ADDED_FIELDS:
        section, key = path.split(".")
        if isinstance(tree.get(section), dict) and tree[section].get(key) == defaults[section][key]:
            tree[section].pop(key)
            if not tree[section]:  # a section added whole, left at its defaults
                del tree[section]
    return tree


def _default_grid() -> dict[str, list[Any]]:
    return {"lambda": [0.0, 0.1, 0.5, 1.0, 2.0]}


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: base values for every field plus the grid whose Cartesian product is run."""

    name: str = "default"
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    free_bits: FreeBitsSpec = FreeBitsSpec()
    anneal: AnnealSpec = AnnealSpec()
    eval: EvalSpec = EvalSpec()
    pretrain: PretrainSpec = PretrainSpec()
    init: InitSpec = InitSpec()
    grid: dict[str, list[Any]] = field(default_factory=_default_grid)
    slurm: SlurmSpec = SlurmSpec()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(RunConfig):
            out[f.name] = _section_to_dict(getattr(self, f.name))
        out["grid"] = {k: list(v) for k, v in self.grid.items()}
        out["slurm"] = _section_to_dict(self.slurm)
        return out

    def grid_paths(self) -> list[str]:
        return [GRID_ALIASES.get(k, k) for k in self.grid]

    def expand(self) -> tuple[RunConfig, ...]:
        """The Cartesian product of the grid, as validated run configs, duplicates dropped (λ = 0
        runs that differ only in the free-bits mode are one run)."""
        base = self.to_dict()
        del base["name"], base["grid"], base["slurm"]
        paths = self.grid_paths()
        runs: dict[str, RunConfig] = {}
        found = FieldErrors()  # each field's first bad value, over all combinations
        for values in itertools.product(*self.grid.values()):
            tree = json.loads(json.dumps(base))
            with found.gather():
                for path, value in zip(paths, values, strict=True):
                    set_path(tree, path, value, prefix="grid.")
                run = _parse_run(tree, where="grid")
                # λ = 0 is the plain VAE in every free-bits mode: the first mode's run stands
                # for all.
                plain = run.free_bits.lam == 0 and dataclasses.replace(
                    run, free_bits=FreeBitsSpec()
                )
                runs.setdefault(plain.run_id if plain else run.run_id, run)
        found.raise_any()
        return tuple(runs.values())


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


#: Attribute names that differ from their YAML keys (keys that are Python keywords).
_YAML_KEYS = {"lam": "lambda", "from_": "from"}
_ATTR_NAMES = {key: attr for attr, key in _YAML_KEYS.items()}


def _yaml_key(name: str) -> str:
    return _YAML_KEYS.get(name, name)


def _attr_name(key: str) -> str:
    return _ATTR_NAMES.get(key, key)


def _section_to_dict(section: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, dict):
            value = json.loads(json.dumps(value))  # a plain dict (YAML and JSON friendly)
        out[_yaml_key(f.name)] = list(value) if isinstance(value, tuple) else value
    return out


def _parse_section(cls: type, raw: Any, where: str, found: FieldErrors | None = None) -> Any:
    """`raw` as a `cls`; with `found`, errors are recorded there and the fields at fault keep
    their defaults (so the rest can still be checked), else the first one is raised."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        error = SpecError(where, f"expected a mapping of fields, got {raw!r}")
        if found is None:
            raise error
        found.add(error)
        return cls()
    hints = typing.get_type_hints(cls)
    names = {_yaml_key(f.name) for f in dataclasses.fields(cls)}
    kwargs = {}
    own = FieldErrors() if found is None else found
    for key, value in raw.items():
        with own.gather():
            if key not in names:
                hint = suggest(str(key), names)
                if cls is SlurmSpec:  # cluster options are looked up, not remembered: list them all
                    hint += "; valid keys: " + ", ".join(sorted(names))
                raise SpecError(f"{where}.{key}", f"unknown field{hint}")
            attr = _attr_name(key)
            kwargs[attr] = coerce(value, hints[attr], f"{where}.{key}")
    if found is None:
        own.raise_any()
    return cls(**kwargs)


def _parse_run(
    tree: dict[str, Any], where: str = "", found: FieldErrors | None = None
) -> RunConfig:
    """The run of `tree`, validated; with `found`, every error is recorded there (not raised)."""
    hints = typing.get_type_hints(RunConfig)
    own = FieldErrors() if found is None else found
    run = with_text_defaults(
        RunConfig(
            **{
                name: _parse_section(hints[name], tree.get(name), name, own)
                for name in _run_fields()
            }
        )
    )
    with own.gather():
        validate_run(run)
    if found is None:
        own.raise_any()
    return run


def with_text_defaults(run: RunConfig) -> RunConfig:
    """On text, the model fields still at their image defaults take the text model's values."""
    if run.dataset.name != "text":
        return run
    changes = {
        name: text
        for name, (image, text) in TEXT_DEFAULTS.items()
        if getattr(run.model, name) == image
    }
    return dataclasses.replace(run, model=dataclasses.replace(run.model, **changes))


def parse_spec(raw: Any, source: str = "spec") -> SweepSpec:
    """Validate a nested mapping (as loaded from YAML) into a SweepSpec."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(source, "a spec must be a YAML mapping of sections")
    known = [f.name for f in dataclasses.fields(SweepSpec)]
    found = FieldErrors()  # every field at fault is reported, one line each
    for key in raw:
        if key not in known:
            found.add(SpecError(str(key), f"unknown section{suggest(str(key), known)}"))
    name, grid = SweepSpec.name, {}
    with found.gather():
        name = coerce(raw.get("name", SweepSpec.name), str, "name")
        if not NAME_PATTERN.match(name):
            msg = f"{name!r} must be letters, digits, '.', '_' or '-' (no slashes)"
            name = SweepSpec.name
            raise SpecError("name", msg)
    run = _parse_run({k: v for k, v in raw.items() if k in _run_fields()}, found=found)
    with found.gather():
        grid = _parse_grid(raw.get("grid", _default_grid()))
    slurm = _parse_section(SlurmSpec, raw.get("slurm"), "slurm", found)
    with found.gather():
        _validate_slurm(slurm)
    spec = SweepSpec(
        name=name, grid=grid, slurm=slurm, **{f: getattr(run, f) for f in _run_fields()}
    )
    with found.gather():
        spec.expand()  # validates every combination now, so bad grid values fail before training
    found.raise_any()
    return spec


def _run_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def _parse_grid(raw: Any) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("grid", "expected a mapping of field -> list of values")
    valid = valid_paths()
    grid: dict[str, list[Any]] = {}
    found = FieldErrors()
    for key, values in raw.items():
        with found.gather():
            grid[str(key)] = _grid_values(key, values, valid, grid)
    found.raise_any()
    return grid


def _grid_values(key: Any, values: Any, valid: set[str], grid: dict[str, list[Any]]) -> list[Any]:
    path = GRID_ALIASES.get(str(key), str(key))
    if path not in valid:
        if isinstance(key, int | float) and values is None:  # `{lambda: 0, 0.5, 1}` in YAML
            raise SpecError(
                f"grid.{key}",
                "a number is not a field: a list of values is written in brackets, "
                "e.g. grid: {lambda: [0, 0.5, 1]}",
            )
        options = list(GRID_ALIASES) + sorted(valid)
        raise SpecError(f"grid.{key}", f"unknown field{suggest(str(key), options)}")
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise SpecError(f"grid.{key}", "needs at least one value")
    if path in {GRID_ALIASES.get(k, k) for k in grid}:
        raise SpecError(f"grid.{key}", f"sweeps {path} a second time")
    return values


def valid_paths() -> set[str]:
    paths = set()
    for section in _run_fields():
        cls = typing.get_type_hints(RunConfig)[section]
        paths |= {f"{section}.{_yaml_key(f.name)}" for f in dataclasses.fields(cls)}
    return paths
