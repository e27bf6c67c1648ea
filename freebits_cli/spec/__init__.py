"""The spec layer: what a sweep asks for, validated, before anything runs.

`config` holds the sections and the frozen `RunConfig` (with its identity), `values` the YAML
coercion and dotted paths, `validation` the per-field checks, `files` reading, merging and writing
spec files, `docs` the generated field reference. May import: `errors` only.
"""

from freebits_cli.spec.config import (
    ADDED_FIELDS,
    GRID_ALIASES,
    NAME_PATTERN,
    TEXT_DEFAULTS,
    AnnealSpec,
    DatasetSpec,
    EvalSpec,
    FreeBitsSpec,
    InitSpec,
    ModelSpec,
    PretrainSpec,
    RunConfig,
    SlurmSpec,
    SweepSpec,
    TrainSpec,
    identity_of,
    parse_spec,
    valid_paths,
    with_text_defaults,
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
