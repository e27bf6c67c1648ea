"""Sweep specs: YAML + flags + `--set` overrides -> a validated `SweepSpec` -> frozen `RunConfig`s.

Every section is a frozen dataclass whose fields carry their defaults and a docstring-style comment.
Parsing is generic (driven by the dataclass fields), so a new field needs no new parsing code.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

FREE_BITS_MODES = ("batch", "example", "total", "group")
SCHEDULES = ("none", "linear", "sigmoid", "cyclical")
BINARIZE = ("none", "dynamic", "static")
OUTPUT_BIASES = ("default", "data_mean")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "softplus", "leaky_relu")
PRECISIONS = ("fp32", "tf32")
LR_SCHEDULES = ("constant", "cosine", "burda")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?(,cuda(:\d+)?)*)$")

#: Short names accepted in `grid:` for the fields swept most often.
GRID_ALIASES = {
    "lambda": "free_bits.lambda",
    "mode": "free_bits.mode",
    "anneal": "anneal.schedule",
    "seed": "train.seed",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "digits"
    """`digits` (bundled), `mnist`, `fashion-mnist`, or a path to a `.npz` with x_train/x_test."""
    data_dir: str | None = None
    """Folder holding the raw IDX files (gzipped or not); None: default places, then download."""
    binarize: str = "none"
    """`none` (grayscale targets), `dynamic` (re-sampled every batch), `static` (sampled once)."""


@dataclass(frozen=True)
class ModelSpec:
    hidden: tuple[int, ...] = (256, 128)
    """Hidden layer widths of the encoder; the decoder mirrors them."""
    latent_dim: int = 16
    """Number of latent dimensions D."""
    activation: str = "relu"
    """Hidden-layer non-linearity."""
    output_bias: str = "default"
    """Decoder output bias at init: `default` (like nn.Linear) or `data_mean` (the logit of each
    pixel's training-set mean, as Burda et al. 2015)."""


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 60
    """Passes over the training set."""
    batch_size: int = 128
    """Examples per optimisation step."""
    lr: float = 1e-3
    """Adam learning rate."""
    adam_eps: float = 1e-8
    """Adam's ε (Burda et al. 2015 used 1e-4)."""
    lr_schedule: str = "constant"
    """`constant`, `cosine` (to 0 over training) or `burda` (lr·10^(-i/7) for 3^i epochs)."""
    seed: int = 0
    """Seeds initialisation, data order, reparameterisation noise and binarisation."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:N`, or a comma list of CUDA devices to spread packs over."""
    precision: str = "fp32"
    """`fp32`, or `tf32` to allow TensorFloat-32 matmuls on Ampere+ GPUs."""


@dataclass(frozen=True)
class FreeBitsSpec:
    lam: float = 0.0
    """Free-bits threshold λ in nats (YAML key `lambda`); 0 is the plain VAE."""
    mode: str = "batch"
    """`batch` (Kingma et al. 2016), `example` (Li et al. 2019), `total`, or `group`."""
    groups: int = 1
    """Number of equal latent groups for `group` mode."""


@dataclass(frozen=True)
class AnnealSpec:
    schedule: str = "none"
    """β(t) schedule for the KL term: `none`, `linear`, `sigmoid`, `cyclical`."""
    warmup_epochs: float = 10.0
    """Length of the linear/sigmoid warm-up in epochs."""
    warmup_steps: int | None = None
    """Warm-up length in optimisation steps; overrides warmup_epochs when set."""
    beta_start: float = 0.0
    """β at step 0 of a linear/sigmoid warm-up (He et al. 2019 start at 0.1)."""
    beta_max: float = 1.0
    """β at the end of the warm-up and the top of each cycle."""
    cycles: int = 4
    """Number of cycles M of the cyclical schedule (Fu et al. 2019)."""
    ratio: float = 0.5
    """Share R of each cycle spent ramping β up (Fu et al. 2019)."""


@dataclass(frozen=True)
class EvalSpec:
    au_threshold: float = 0.01
    """δ of the active-unit rule Cov_x(E_q[z_j|x]) > δ (Burda et al. 2015)."""
    kl_threshold: float = 0.01
    """A unit is active by the KL rule when its mean KL exceeds this (nats)."""
    collapse_threshold: float = 0.01
    """ε: a unit has collapsed from the first epoch after which its KL stays below ε (nats)."""
    iwae_samples: int = 100
    """k of the importance-weighted bound at the end of a run (0: skip)."""
    iwae_every: int = 0
    """Also compute the IWAE bound every N epochs (0: only at the end)."""
    mi: bool = True
    """Estimate the mutual information I(x;z) at the end of a run."""
    samples: int = 8
    """Test reconstructions and prior samples saved per run for the report."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on; its hash is the run's identity."""

    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    free_bits: FreeBitsSpec = FreeBitsSpec()
    anneal: AnnealSpec = AnnealSpec()
    eval: EvalSpec = EvalSpec()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _section_to_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @property
    def run_id(self) -> str:
        """Readable prefix + short hash, stable across processes and machines."""
        digest = hashlib.sha1(
            json.dumps(self.to_dict(), sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()[:6]
        parts = [f"lam{self.free_bits.lam:g}"]
        if self.free_bits.mode != "batch":
            parts.append(self.free_bits.mode)
        parts += [self.anneal.schedule, f"s{self.train.seed}", digest]
        return "-".join(parts)

    def setting(self, grid_paths: typing.Iterable[str]) -> dict[str, Any]:
        """The values of the swept fields for this run, keyed by full field path."""
        return {path: get_path(self.to_dict(), path) for path in grid_paths}


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
    grid: dict[str, list[Any]] = field(default_factory=_default_grid)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(RunConfig):
            out[f.name] = _section_to_dict(getattr(self, f.name))
        out["grid"] = {k: list(v) for k, v in self.grid.items()}
        return out

    def grid_paths(self) -> list[str]:
        return [GRID_ALIASES.get(k, k) for k in self.grid]

    def expand(self) -> tuple[RunConfig, ...]:
        """The Cartesian product of the grid, as validated run configs, duplicates dropped."""
        base = self.to_dict()
        del base["name"], base["grid"]
        paths = self.grid_paths()
        runs: dict[str, RunConfig] = {}
        for values in itertools.product(*self.grid.values()):
            tree = json.loads(json.dumps(base))
            for path, value in zip(paths, values, strict=True):
                set_path(tree, path, value, prefix="grid.")
            run = _parse_run(tree, where="grid")
            runs.setdefault(run.run_id, run)
        return tuple(runs.values())


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def _yaml_key(name: str) -> str:
    return "lambda" if name == "lam" else name


def _attr_name(key: str) -> str:
    return "lam" if key == "lambda" else key


def _section_to_dict(section: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[_yaml_key(f.name)] = list(value) if isinstance(value, tuple) else value
    return out


def _suggest(key: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Convert a YAML value to the field's annotated type, or raise a SpecError naming the field."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(value, inner, where)
    if origin is tuple:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise SpecError(where, f"expected a list, got {value!r}")
        return tuple(
            _coerce(v, typing.get_args(kind)[0], f"{where}[{i}]") for i, v in enumerate(value)
        )
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(where, f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SpecError(where, f"expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise SpecError(where, f"expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise SpecError(where, f"expected an integer, got {value!r}")
        return int(number)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SpecError(where, f"expected a number, got {value!r}")
        try:
            return float(value) + 0.0  # folds -0.0 into 0.0: one run id per value
        except ValueError:
            raise SpecError(where, f"expected a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SpecError(where, f"expected a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported field type {kind}")  # pragma: no cover


def _parse_section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(where, f"expected a mapping of fields, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {_yaml_key(f.name) for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise SpecError(f"{where}.{key}", f"unknown field{_suggest(str(key), names)}")
        attr = _attr_name(key)
        kwargs[attr] = _coerce(value, hints[attr], f"{where}.{key}")
    return cls(**kwargs)


def _parse_run(tree: dict[str, Any], where: str = "") -> RunConfig:
    sections = {f.name: f for f in dataclasses.fields(RunConfig)}
    hints = typing.get_type_hints(RunConfig)
    kwargs = {name: _parse_section(hints[name], tree.get(name), name) for name in sections}
    run = RunConfig(**kwargs)
    validate_run(run)
    return run


def parse_spec(raw: Any, source: str = "spec") -> SweepSpec:
    """Validate a nested mapping (as loaded from YAML) into a SweepSpec."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(source, "a spec must be a YAML mapping of sections")
    known = [f.name for f in dataclasses.fields(SweepSpec)]
    for key in raw:
        if key not in known:
            raise SpecError(str(key), f"unknown section{_suggest(str(key), known)}")
    name = _coerce(raw.get("name", SweepSpec.name), str, "name")
    if not NAME_PATTERN.match(name):
        raise SpecError("name", f"{name!r} must be letters, digits, '.', '_' or '-' (no slashes)")
    run = _parse_run({k: v for k, v in raw.items() if k not in ("name", "grid")})
    grid = _parse_grid(raw.get("grid", _default_grid()))
    spec = SweepSpec(name=name, grid=grid, **{f: getattr(run, f) for f in _run_fields()})
    spec.expand()  # validates every combination now, so bad grid values fail before training
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
    for key, values in raw.items():
        path = GRID_ALIASES.get(str(key), str(key))
        if path not in valid:
            options = list(GRID_ALIASES) + sorted(valid)
            raise SpecError(f"grid.{key}", f"unknown field{_suggest(str(key), options)}")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise SpecError(f"grid.{key}", "needs at least one value")
        if path in {GRID_ALIASES.get(k, k) for k in grid}:
            raise SpecError(f"grid.{key}", f"sweeps {path} a second time")
        grid[str(key)] = values
    return grid


def valid_paths() -> set[str]:
    paths = set()
    for section in _run_fields():
        cls = typing.get_type_hints(RunConfig)[section]
        paths |= {f"{section}.{_yaml_key(f.name)}" for f in dataclasses.fields(cls)}
    return paths


# ---------------------------------------------------------------------------------------------
# validation of values (types are already right here)


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise SpecError(where, message)


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _one_of(value: str, options: tuple[str, ...], where: str) -> None:
    _check(
        value in options,
        where,
        f"{value!r} is not one of {', '.join(options)}" + _suggest(value, options),
    )


def validate_run(run: RunConfig) -> None:
    d, m, t, fb, a, e = run.dataset, run.model, run.train, run.free_bits, run.anneal, run.eval
    if not d.name.endswith(".npz"):
        _one_of(d.name, ("digits", "mnist", "fashion-mnist"), "dataset.name")
    _one_of(d.binarize, BINARIZE, "dataset.binarize")
    _check(
        len(m.hidden) > 0 and all(h > 0 for h in m.hidden),
        "model.hidden",
        f"needs one or more positive widths, got {list(m.hidden)}",
    )
    _check(m.latent_dim > 0, "model.latent_dim", f"must be > 0, got {m.latent_dim}")
    _one_of(m.activation, ACTIVATIONS, "model.activation")
    _one_of(m.output_bias, OUTPUT_BIASES, "model.output_bias")
    _check(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    _check(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    _check(_finite(t.lr) and t.lr > 0, "train.lr", f"must be a finite number > 0, got {t.lr}")
    _check(
        _finite(t.adam_eps) and t.adam_eps > 0,
        "train.adam_eps",
        f"must be a finite number > 0, got {t.adam_eps}",
    )
    _one_of(t.lr_schedule, LR_SCHEDULES, "train.lr_schedule")
    _check(t.seed >= 0, "train.seed", f"must be >= 0, got {t.seed}")
    _check(
        bool(DEVICE_PATTERN.match(t.device)),
        "train.device",
        f"{t.device!r} is not auto, cpu, cuda, cuda:N or a comma list of cuda:N",
    )
    _one_of(t.precision, PRECISIONS, "train.precision")
    _check(
        _finite(fb.lam) and fb.lam >= 0,
        "free_bits.lambda",
        f"must be a finite number >= 0 (nats), got {fb.lam}",
    )
    _one_of(fb.mode, FREE_BITS_MODES, "free_bits.mode")
    _check(
        fb.groups > 0 and m.latent_dim % fb.groups == 0,
        "free_bits.groups",
        f"must divide model.latent_dim={m.latent_dim}, got {fb.groups}",
    )
    _one_of(a.schedule, SCHEDULES, "anneal.schedule")
    _check(
        _finite(a.warmup_epochs) and a.warmup_epochs > 0,
        "anneal.warmup_epochs",
        f"must be > 0, got {a.warmup_epochs}",
    )
    _check(
        a.warmup_steps is None or a.warmup_steps > 0,
        "anneal.warmup_steps",
        f"must be > 0, got {a.warmup_steps}",
    )
    _check(
        _finite(a.beta_max) and a.beta_max >= 0,
        "anneal.beta_max",
        f"must be a finite number >= 0, got {a.beta_max}",
    )
    _check(
        _finite(a.beta_start) and 0 <= a.beta_start <= a.beta_max,
        "anneal.beta_start",
        f"must lie in [0, beta_max={a.beta_max}], got {a.beta_start}",
    )
    _check(a.cycles > 0, "anneal.cycles", f"must be > 0, got {a.cycles}")
    _check(
        _finite(a.ratio) and 0 < a.ratio <= 1, "anneal.ratio", f"must lie in (0, 1], got {a.ratio}"
    )
    for name in ("au_threshold", "kl_threshold", "collapse_threshold"):
        value = getattr(e, name)
        _check(_finite(value) and value >= 0, f"eval.{name}", f"must be >= 0, got {value}")
    _check(e.iwae_samples >= 0, "eval.iwae_samples", f"must be >= 0, got {e.iwae_samples}")
    _check(e.iwae_every >= 0, "eval.iwae_every", f"must be >= 0, got {e.iwae_every}")
    _check(e.samples >= 0, "eval.samples", f"must be >= 0, got {e.samples}")


# ---------------------------------------------------------------------------------------------
# paths, files and overrides


def get_path(tree: dict[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        node = node[part]
    return node


def set_path(tree: dict[str, Any], path: str, value: Any, prefix: str = "") -> None:
    """Set `a.b.c` in a nested dict, naming the path (with a suggestion) when it does not exist."""
    parts = path.split(".")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise SpecError(prefix + where, f"unknown section{_suggest(part, list(node))}")
        node = child
    if parts[-1] not in node:
        raise SpecError(prefix + path, f"unknown field{_suggest(parts[-1], list(node))}")
    node[parts[-1]] = value


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
    if raw is None:
        raw = {}
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
            # A single explicit value for a swept field replaces the sweep over it.
            set_path(tree, path, value, prefix="--set ")
            _drop_grid_path(grid, path)
    return parse_spec(tree, source=str(spec_file or "defaults"))


def _drop_grid_path(grid: dict[str, Any], path: str) -> None:
    for key in [k for k in grid if GRID_ALIASES.get(str(k), str(k)) == path]:
        del grid[key]


def dump_spec(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
