"""Statistics across seeds: one row per setting with the mean, spread and a 95% interval of each
metric, kept inside the range the quantity can take.

A t-interval (Student t with n − 1 degrees of freedom, scipy.stats) is symmetric about the mean,
so with two or three seeds it runs past what a quantity can be: below zero active units, above
the latent size, negative KL or mutual information. Those ends are clipped to the quantity's range
(`RANGES`); the page and the figures say so. The half-width stays in `<metric>_ci95` (before
clipping), the clipped ends in `<metric>_lo` and `<metric>_hi`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from freebits_cli import schema
from freebits_cli.results.information import verdict

if TYPE_CHECKING:
    import pandas as pd

    from freebits_cli.results.reader import Runs

METRICS = schema.REPORT_METRICS
#: (lowest, highest) value of each bounded quantity; "D" is the run's latent size. Active units
#: count latent units (Burda et al. 2015); KL and I(x;z) are never negative (He et al. 2019).
RANGES: dict[str, tuple[float, float | str]] = {
    "active_units": (0.0, "D"),
    "active_units_kl": (0.0, "D"),
    "active_share": (0.0, 1.0),
    "test_kl": (0.0, math.inf),
    "test_mi": (0.0, math.inf),
    "test_marginal_kl": (0.0, math.inf),
    "test_probe_accuracy": (0.0, 1.0),
    "seconds": (0.0, math.inf),
    "test_ppl": (1.0, math.inf),
    "test_elbo_ppl": (1.0, math.inf),
}


@dataclass(frozen=True)
class SeedStats:
    """Summary of one metric over the seeds of one setting (finite values only)."""

    mean: float
    std: float  # sample standard deviation (ddof = 1); NaN below two values
    ci95: float  # half-width of the two-sided 95% t-interval, t(0.975, n−1)·s/√n
    lo: float  # the interval's ends, clipped to the quantity's range
    hi: float
    n: int


def t975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def seed_stats(values: Any, low: float = -math.inf, high: float = math.inf) -> SeedStats:
    """Mean, sample std, 95% t-interval of the finite `values`; its ends clipped to [low, high]."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return SeedStats(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) == 1:
        return SeedStats(mean, math.nan, math.nan, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = t975(len(x) - 1) * std / math.sqrt(len(x))
    return SeedStats(mean, std, half, max(mean - half, low), min(mean + half, high), len(x))


def metric_range(metric: str, latent_dim: Any) -> tuple[float, float]:
    """The range of `metric` for runs of latent size `latent_dim` (unbounded when unknown)."""
    low, high = RANGES.get(metric, (-math.inf, math.inf))
    if high == "D":
        try:
            high = float(latent_dim) if latent_dim == latent_dim else math.inf
        except (TypeError, ValueError):
            high = math.inf
    return low, float(high)


INFORMATION = "information"


def setting_verdict(rec: dict[str, Any]) -> str:
    """The verdict of a setting (results/information.py's rule) on its means over seeds: mean KL,
    mean covariance-rule active units, and MI's interval — over seeds (`test_mi_lo/hi` of this
    table) or, with one seed, over that run's MI draws. "" without a finished run."""
    return verdict(
        rec.get("test_kl_mean", math.nan),
        rec.get("test_mi_lo", math.nan),
        rec.get("test_mi_hi", math.nan),
        rec.get("active_units_mean", math.nan),
    )


def _sortable(col: pd.Series) -> pd.Series:
    import pandas as pd

    return col if pd.api.types.is_numeric_dtype(col) else col.astype(str)


def by_setting_table(runs: Runs) -> pd.DataFrame:
    """One row per setting (all but the seed): n done runs; mean, std (ddof=1), 95% CI of each."""
    import pandas as pd

    table, keys = runs.table, runs.keys
    finished = table[table["state"] == "done"]
    core = ("test_elbo", "test_recon", "test_kl", "active_units", "active_share")
    metrics = [m for m in METRICS if m in core or finished[m].notna().any()]
    records = []
    for _, group in table.groupby(keys, dropna=False, sort=False):
        done = group[group["state"] == "done"]
        rec: dict[str, Any] = {k: group[k].iloc[0] for k in keys}
        rec |= {"strategy": group["strategy"].iloc[0], "n": len(done)}
        rec["n_failed"] = int((group["state"] == "failed").sum())
        rec["n_incomplete"] = int((group["state"] == "incomplete").sum())
        rec["n_damaged"] = int(((group["state"] == "incomplete") & group["summary_damaged"]).sum())
        rec["seeds"] = ",".join(str(int(x)) for x in sorted(done["seed"].dropna()))
        rec["latent_dim"] = group["latent_dim"].max()
        if "cross_entropy" in group:
            rec["cross_entropy"] = bool(group["cross_entropy"].fillna(False).astype(bool).any())
        # One run per setting (the lowest seed) for the figures that show single runs.
        rec["_example"] = done.sort_values("seed")["path"].iloc[0] if len(done) else None
        for m in metrics:
            s = seed_stats(done[m], *metric_range(m, rec["latent_dim"]))
            rec |= {f"{m}_mean": s.mean, f"{m}_std": s.std, f"{m}_ci95": s.ci95}
            rec |= {f"{m}_lo": s.lo, f"{m}_hi": s.hi}
        rec["iwae_samples"] = group["iwae_samples"].max() if "iwae_samples" in group else None
        if len(done) == 1 and "test_mi_lo" in done:  # one seed: the interval over MI's draws
            rec["test_mi_lo"] = float(done["test_mi_lo"].iloc[0])
            rec["test_mi_hi"] = float(done["test_mi_hi"].iloc[0])
        rec[INFORMATION] = setting_verdict(rec)
        records.append(rec)
    df = pd.DataFrame(records)
    # Each schedule's rows together, "none" first, λ ascending within: how the figures read.
    df["_annealed"] = df["anneal"].astype(str) != "none"
    order = [k for k in keys if k == "sweep"] + ["_annealed", "anneal", "free_bits_mode"]
    order += [k for k in keys if "." in k] + ["lambda"]
    df = df.sort_values(order, key=_sortable, kind="stable").drop(columns="_annealed")
    return df.reset_index(drop=True)
