"""Did the rate buy information? One verdict per run (summary.json `information`) or per setting.

The mean KL a run reports is the sum of two parts (Hoffman & Johnson 2016, "ELBO surgery"):
E_x KL(q(z|x)‖p(z)) = I_q(x;z) + KL(q(z)‖p(z)). Free bits can be met by the second part alone —
every posterior moved off the prior in the same way — so a KL above the budget, and units active
by the KL rule, say nothing about x. The verdict reads the parts that do: the mutual information
(with its interval over draws) and the units active by the covariance rule Cov_x(E_q[z_j|x]) > δ
(Burda et al. 2015), which only a code that varies with x can pass. The MI decides where its
interval does; the covariance rule only where the interval straddles the bar or MI is missing,
since a unit can pass it and carry next to nothing: a mean that varies by Cov = δ = 0.01 under a
posterior of variance ~1 holds ½·log(1 + δ/σ²) ≈ 0.005 nats.

A pure function of numbers (no torch, no files): the trainer writes it per run, the report applies
the same rule to a setting's means over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

COLLAPSED = "collapsed"
INFORMATIVE = "informative"
KL_WITHOUT_INFORMATION = "kl_without_information"
#: Every verdict, from worst to best.
VERDICTS = (COLLAPSED, KL_WITHOUT_INFORMATION, INFORMATIVE)

#: Nats of I(x;z) a code must carry, with its whole interval, to count as informative. Small on
#: purpose — a twentieth of a nat is ~0.07 bits — so that any measurable information counts; it
#: sits above the Monte Carlo noise of a mean over draws (±0.02–0.07 nats on a few hundred
#: examples), not above the estimator's own spread of one draw (±0.12–0.16 nats).
MI_INFORMATIVE = 0.05
#: Mean KL (nats per example) below which a run has collapsed. The same number as MI_INFORMATIVE,
#: because I(x;z) ≤ E_x KL(q(z|x)‖p(z)): below it no amount of information could pass the MI test.
COLLAPSED_KL = MI_INFORMATIVE


def verdict(kl: float, mi_lo: float, mi_hi: float, active_units: float) -> str:
    """`collapsed` (KL < COLLAPSED_KL); else by the MI's interval: `informative` when all of it
    lies above MI_INFORMATIVE, `kl_without_information` when none of it does (KL well above 0,
    and whatever units pass the covariance rule carry less than the bar together); where it
    straddles the bar, or MI is missing (NaN: not computed, or one draw: no interval), the
    covariance rule decides: `informative` with any unit whose mean varies with x. A NaN KL (no
    result) gives ""."""
    if _missing(kl):
        return ""
    if kl < COLLAPSED_KL:
        return COLLAPSED
    if not _missing(mi_lo) and mi_lo > MI_INFORMATIVE:
        return INFORMATIVE
    if not _missing(mi_hi) and mi_hi <= MI_INFORMATIVE:
        return KL_WITHOUT_INFORMATION
    if not _missing(active_units) and active_units > 0:
        return INFORMATIVE
    return KL_WITHOUT_INFORMATION


def verdict_of(row: Mapping[str, Any]) -> str:
    """`verdict` of a summary.json, summary.csv row or by-setting row, by its column names."""
    return verdict(
        _number(row.get("test_kl")),
        _number(row.get("test_mi_lo")),
        _number(row.get("test_mi_hi")),
        _number(row.get("active_units")),
    )


def _number(value: Any) -> float:
    try:
        return math.nan if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return math.nan


def _missing(value: float) -> bool:
    return value is None or math.isnan(value)
