"""Are two sets of runs the same up to seed noise? Welch's two-sample t-test on a final metric.

On a GPU a packed run and the same run alone round differently, so their trajectories part after a
few steps and each final number is, in effect, another draw from the run's distribution over
seeds. "Packed and alone agree in distribution" then means: the difference of the two means is
within what the seed-to-seed spread allows. Welch's test (Welch 1947) does not assume the two
spreads are equal; its confidence interval for the difference of means is the statement checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Comparison:
    """mean(a) − mean(b), its confidence interval [low, high], Welch's p-value, the seed spreads."""

    difference: float
    low: float
    high: float
    p_value: float
    spread_a: float
    spread_b: float

    @property
    def indistinguishable(self) -> bool:
        """0 lies in the interval: no difference the seed spread cannot explain."""
        return self.low <= 0.0 <= self.high

    def __str__(self) -> str:
        return (
            f"difference of means {self.difference:+.4f} (interval [{self.low:+.4f}, "
            f"{self.high:+.4f}], p = {self.p_value:.3g}; seed sd {self.spread_a:.4f} and "
            f"{self.spread_b:.4f})"
        )


def compare_means(a: Sequence[float], b: Sequence[float], confidence: float = 0.99) -> Comparison:
    """Welch's t-test of mean(a) = mean(b) with its `confidence` interval for the difference."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("need at least two values on each side to see a seed spread")
    difference = float(x.mean() - y.mean())
    sd_x, sd_y = float(x.std(ddof=1)), float(y.std(ddof=1))
    if sd_x == 0.0 and sd_y == 0.0:  # no spread at all: only an exact match is no difference
        return Comparison(difference, difference, difference, float(difference == 0), 0.0, 0.0)
    result = stats.ttest_ind(x, y, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(
        difference, float(interval.low), float(interval.high), float(result.pvalue), sd_x, sd_y
    )
