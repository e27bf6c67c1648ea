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
SHOWN += (("test_mi", "MI (nats)", 2),)
# Image likelihoods (8-bit data) also report NLL / (C·H·W · ln 2).
SHOWN += (("test_bits_per_dim", "bits/dim", 3), ("test_iwae_bits_per_dim", "IWAE bits/dim", 3))


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


def fmt_interval(mean: Any, lo: Any, hi: Any, digits: int = 2) -> str:
    """mean [lo, hi]: a 95% interval clipped to the quantity's range; the mean alone without one."""
    if _missing(mean):
        return "-"
    if _missing(lo) or _missing(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


#: Footnote marks: a number that is not what its column's name promises.
CROSS_ENTROPY = "†"
NOISE = "‡"
NOTES = {
    CROSS_ENTROPY: "grayscale targets under a Bernoulli decoder (binarize: none): the ELBO and "
    "IWAE numbers are a summed cross-entropy, not a likelihood",
    NOISE: "mutual information estimated below zero: Monte Carlo noise of the estimator around "
    "I(x;z) ≈ 0 (I(x;z) ≥ 0 always), not a value to cite",
}
#: Metrics that are a likelihood only when the decoder's likelihood is one of its targets.
LIKELIHOOD_METRICS = ("test_elbo", "test_recon", "test_iwae_nll")


def cross_entropy_note(df: pd.DataFrame) -> str:
    """What a figure axis showing an ELBO or IWAE number must add: "" for likelihoods."""
    if "cross_entropy" not in df or not df["cross_entropy"].astype(bool).any():
        return ""
    if df["cross_entropy"].astype(bool).all():
        return "summed cross-entropy, not a likelihood"
    return f"{CROSS_ENTROPY} grayscale Bernoulli runs: a summed cross-entropy"


def fmt_mi(value: Any, digits: int = 3) -> str:
    """An MI estimate; below zero it is estimator noise around zero (He et al. 2019), not a value."""
    if _missing(value):
        return "-"
    return f"≈ 0 {NOISE}" if value < 0 else f"{value:.{digits}f}"


def fmt_stat(row: Mapping[str, Any] | pd.Series, metric: str, digits: int = 2) -> str:
    """One metric of a by-setting row: mean ± 95% CI, or mean [lo, hi] for a bounded quantity
    (the interval clipped to its range); a negative mean MI as noise (see NOTES)."""
    from freebits_cli.report.stats import RANGES

    mean = row.get(f"{metric}_mean")
    if metric == "test_mi" and not _missing(mean) and mean < 0:
        return fmt_mi(mean)
    if metric in RANGES and f"{metric}_lo" in row:
        return fmt_interval(mean, row[f"{metric}_lo"], row[f"{metric}_hi"], digits)
    return fmt_pm(mean, row.get(f"{metric}_ci95"), digits)


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
