"""Words and numbers for the report: setting labels and value formatting, shared by the page,
the terminal table and the figures (kept apart so the figures need not import the page)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

LABELS = {"lambda": "λ", "free_bits_mode": "free-bits mode", "anneal": "schedule", "sweep": "sweep"}
# (column stem, header, decimals) of the metrics shown in the terminal and the page.
SHOWN = (("test_elbo", "ELBO (nats)", 2), ("active_units", "active units", 1))
SHOWN += (("test_kl", "KL (nats)", 2), ("test_iwae_nll", "IWAE NLL (nats)", 2))
# Image likelihoods (8-bit data) also report NLL / (C·H·W · ln 2).
SHOWN += (("test_bits_per_dim", "bits/dim", 3), ("test_iwae_bits_per_dim", "IWAE bits/dim", 3))
# Text: perplexity per predicted token, from the IWAE NLL and from -ELBO.
SHOWN += (("test_ppl", "PPL", 1), ("test_elbo_ppl", "PPL (ELBO)", 1))


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(
            value != value
        )  # NaN and pandas.NA are not equal to themselves
    except (TypeError, ValueError):
        return True


def fmt_value(value: Any) -> str:
    """A setting value: 0.5, 2, linear, or - when missing."""
    if _missing(value):
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fmt_pm(mean: Any, ci: Any, digits: int = 2) -> str:
    """mean ± 95% CI half-width; the mean alone when there is one seed; - when missing."""
    if _missing(mean):
        return "-"
    return f"{mean:.{digits}f}" if _missing(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def varying(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The setting columns worth naming: λ and schedule always, the others when they vary."""
    return [k for k in keys if k in ("lambda", "anneal") or df[k].nunique(dropna=False) > 1]


def describe(row: Mapping[str, Any] | pd.Series, keys: Sequence[str]) -> str:
    """A setting in words: "λ = 0.5, linear annealing, batch free bits"."""
    parts = []
    for key in keys:
        value = fmt_value(row[key])
        if key == "lambda":
            parts.append(f"λ = {value}")
        elif key == "anneal":
            parts.append("no annealing" if value == "none" else f"{value} annealing")
        elif key == "free_bits_mode":
            parts.append(f"{value} free bits")
        else:
            parts.append(f"{key} = {value}")
    return ", ".join(parts)


def short_label(row: Mapping[str, Any] | pd.Series, keys: Sequence[str]) -> str:
    """A setting for a figure label: "λ=0.5 · linear"."""
    return " · ".join(
        f"λ={fmt_value(row[k])}" if k == "lambda" else fmt_value(row[k]) for k in keys
    )
