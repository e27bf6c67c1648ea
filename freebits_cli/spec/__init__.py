"""The spec layer: what a sweep asks for, validated, before anything runs.

`sections` holds the spec's sections (one frozen dataclass each), `config` the frozen `RunConfig`
(with its identity), the `SweepSpec` and their parsing, `values` the YAML coercion and dotted
paths, `validation` the per-field checks, `files` reading, merging and writing spec files, `docs`
the generated field reference. May import: `errors` and `schema` only.
"""

from freebits_cli.spec.config import (
    ADDED_FIELDS,
    GRID_ALIASES,
    NAME_PATTERN,
    TEXT_DEFAULTS,
    RunConfig,
    SweepSpec,
    identity_of,
    parse_spec,
    valid_paths,
    with_text_defaults,
)
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
)

__all__ = [
    "ADDED_FIELDS",
    "GRID_ALIASES",
    "NAME_PATTERN",
    "TEXT_DEFAULTS",
    "AnnealSpec",
    "DatasetSpec",
    "EvalSpec",
    "FreeBitsSpec",
    "InitSpec",
    "ModelSpec",
    "PretrainSpec",
    "RunConfig",
    "SlurmSpec",
    "SweepSpec",
    "TrainSpec",
    "identity_of",
    "parse_spec",
    "valid_paths",
    "with_text_defaults",
]
