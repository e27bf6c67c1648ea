"""Words and numbers for the report: setting labels, value formatting, footnotes, figure captions
and the by-setting table rows, shared by the page,
the terminal table and the figures (kept apart so the figures need not import the page)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

LABELS = {"lambda": "λ", "free_bits_mode": "free-bits mode", "anneal": "schedule", "sweep": "sweep"}
# (column stem, header, decimals) of the metrics shown in the terminal and the page. Both
# active-unit rules side by side, so a gap between them is seen: the covariance rule counts units
# whose posterior mean varies with x (Burda et al. 2015), the KL rule units whose mean KL is
# above a threshold (met too by posteriors all moved off the prior alike).
SHOWN = (("test_elbo", "ELBO (nats)", 2), ("test_recon", "recon (nats)", 2))
SHOWN += (("active_units", "AU (cov.)", 1), ("active_units_kl", "AU (KL)", 1))
SHOWN += (("test_kl", "KL (nats)", 2), ("test_mi", "MI (nats)", 2))
SHOWN += (("test_marginal_kl", "marginal KL", 2), ("test_probe_accuracy", "probe acc.", 3))
SHOWN += (("test_iwae_nll", "IWAE NLL (nats)", 2),)
# Image likelihoods (8-bit data) also report NLL / (C·H·W · ln 2).
SHOWN += (("test_bits_per_dim", "bits/dim", 3), ("test_iwae_bits_per_dim", "IWAE bits/dim", 3))
# Text: perplexity per predicted token, from the IWAE NLL and from -ELBO.
SHOWN += (("test_ppl", "PPL", 1), ("test_elbo_ppl", "PPL (ELBO)", 1))
#: Metrics computed with the IWAE bound: their header names its k (Burda et al. 2015).
IWAE_METRICS = ("test_iwae_nll", "test_iwae_bits_per_dim", "test_ppl")
#: The verdict of results/information.py in words.
VERDICTS = {
    "informative": "informative",
    "kl_without_information": "KL without information",
    "collapsed": "collapsed",
}
#: What each active-unit rule counts, for captions and notes.
AU_RULES = (
    "AU (cov.): units whose posterior mean varies with x, Cov_x(E_q[z_j|x]) > δ (Burda et al. "
    "2015); AU (KL): units whose mean KL(q(z_j|x)‖p(z_j)) is above a threshold, which posteriors "
    "all moved off the prior alike also pass."
)


def iwae_k(df: pd.DataFrame) -> str:
    """ "k = 100" (or "k = 10, 100"): the importance samples behind the IWAE numbers of `df`."""
    if "iwae_samples" not in df:
        return ""
    ks = sorted({int(k) for k in df["iwae_samples"].dropna()})
    return f"k = {', '.join(str(k) for k in ks)}" if ks else ""


def with_k(header: str, metric: str, k: str) -> str:
    """A header of an IWAE number with its k: "IWAE NLL (k = 100, nats)"."""
    if metric not in IWAE_METRICS or not k:
        return header
    if "(nats)" in header:
        return header.replace("(nats)", f"({k}, nats)")
    return f"{header} ({k})"


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


#: Where an interval would be, for a setting with one seed: nothing to estimate a spread from.
NO_INTERVAL = "n = 1: no interval"
#: What to do about it, said once below a table or figure that has such a setting.
MORE_SEEDS = (
    f"{NO_INTERVAL}: a setting with one seed has no spread to estimate an interval from; "
    "run more seeds (e.g. --seeds 0,1,2) for 95% intervals."
)


def fmt_pm(mean: Any, ci: Any, digits: int = 2, n: Any = None) -> str:
    """mean ± 95% CI half-width; with one seed (`n` = 1) the mean and "n = 1: no interval";
    the mean alone when there is no interval otherwise; - when missing."""
    if _missing(mean):
        return "-"
    if _missing(ci):
        return f"{mean:.{digits}f} ({NO_INTERVAL})" if _one(n) else f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _one(n: Any) -> bool:
    return not _missing(n) and int(n) == 1


def fmt_interval(mean: Any, lo: Any, hi: Any, digits: int = 2, n: Any = None) -> str:
    """mean [lo, hi]: a 95% interval clipped to the quantity's range; the mean alone without one
    (with "n = 1: no interval" when there is one seed)."""
    if _missing(mean):
        return "-"
    if _missing(lo) or _missing(hi):
        return f"{mean:.{digits}f} ({NO_INTERVAL})" if _one(n) else f"{mean:.{digits}f}"
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

    mean, n = row.get(f"{metric}_mean"), row.get("n")
    if metric == "test_mi" and not _missing(mean) and mean < 0:
        return fmt_mi(mean)
    if metric in RANGES and f"{metric}_lo" in row:
        return fmt_interval(mean, row[f"{metric}_lo"], row[f"{metric}_hi"], digits, n)
    return fmt_pm(mean, row.get(f"{metric}_ci95"), digits, n)


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


# Title and caption of each figure on the page: what it shows and how to read it.
CAPTIONS = {
    "active_units": (
        "Active units and distortion vs λ",
        "How many latent units carry information as the free-bits threshold grows, by two rules: "
        "the covariance rule (lines, bands), a unit whose posterior mean varies with x, "
        "Cov_x(E_q[z_j|x]) > δ (Burda et al. 2015), and the KL rule (dotted, hollow), a unit whose "
        "mean KL is above a threshold — which posteriors all moved off the prior alike pass too, "
        "so a gap between the two is KL without information. Dashed: the latent size D. Beside "
        "it the distortion (reconstruction NLL) and, where the data has labels, a linear probe's "
        "test accuracy on the posterior means. Bands: the 95% t-interval over seeds, clipped to "
        "the range; ×: a setting whose code carries no information (○: collapsed).",
    ),
    "rate_split": (
        "Where the rate goes",
        "The mean KL splits into information and marginal KL (Hoffman & Johnson 2016): "
        "E_x KL(q(z|x)‖p(z)) = I(x;z) + KL(q(z)‖p(z)). Blue: the mutual information (bars: its "
        "95% interval); orange: the marginal KL, rate spent moving every posterior off the prior "
        "alike, which says nothing about x; diamond: the analytic mean KL the two estimate. "
        "× under a bar: KL without information; ○: collapsed.",
    ),
    "elbo": (
        "Test ELBO vs λ",
        "The price of free bits in likelihood: the true, unclamped ELBO "
        "(β = 1); beside it the importance-weighted NLL when runs computed one, and bits per "
        "dimension for 8-bit image likelihoods.",
    ),
    "pareto": (
        "ELBO vs active units",
        "Each point a setting (mean over seeds); the line joins "
        "the settings no other beats on both; the circle is the recommendation. Bars: 95% "
        "t-intervals over seeds, those of active units clipped to [0, D].",
    ),
    "rate_distortion": (
        "Rate vs distortion",
        "Each run a point: rate = KL, distortion = "
        "reconstruction NLL (Alemi et al. 2018); a dotted line is one ELBO.",
    ),
    "kl_per_dim": (
        "KL per latent dimension",
        "Final KL of each unit, sorted within each run, on a log colour scale in nats; grey "
        "cells (below the scale) are collapsed units; free bits hold units near λ (white marks "
        "on the colour bar).",
    ),
    "kl_trajectories": (
        "KL per unit over epochs",
        "One panel per setting (lowest seed): when "
        "units collapse (KL falls to ~0; ×: the epoch a unit collapsed) and where free bits hold "
        "them (dashed: λ).",
    ),
    "curves": (
        "Training curves",
        "Test ELBO, KL, active units and the annealing weight β per "
        "epoch for every run, including runs still going or failed.",
    ),
    "reconstructions": (
        "Reconstructions",
        "The same test images in every run (top row) and "
        "their reconstructions for each setting (lowest seed).",
    ),
    "remedies": (
        "Remedies: likelihood against information",
        "The papers' trade-off view (He et al. 2019; Li et al. 2019): each remedy the sweep ran "
        "(or combination), at its setting of best mean test ELBO, as its IWAE NLL (the negative "
        "ELBO where the IWAE bound was not computed; lower is better) against its mutual "
        "information I(x;z) (right is more information); bars: 95% intervals over seeds.",
    ),
    "samples": (
        "Prior samples",
        "Decoded samples z ~ N(0, I) for each setting (lowest seed). Where a setting's marginal "
        "KL (tables) is large, the prior covers regions the aggregate posterior leaves empty "
        "(holes), and its samples may look unlike the data.",
    ),
}


def by_setting_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and string rows of the by-setting table, for a Rich (or HTML) table.

    Setting columns (constant ones left out, except λ and schedule), n, then mean ± 95% CI of
    the test ELBO, KL and (when recorded) the IWAE NLL; mean [95% CI clipped to the range] of
    active units and MI. Marks (see `table_notes`): † on a summed cross-entropy (in the header
    when every row is one), ‡ on an MI estimate below zero.
    """
    keys = [c for c in df.columns if c in LABELS or "." in c]
    keys = varying(df, keys)
    shown = [s for s in SHOWN if f"{s[0]}_mean" in df and df[f"{s[0]}_mean"].notna().any()]
    ce = df["cross_entropy"].astype(bool) if "cross_entropy" in df else None
    every, some = ce is not None and bool(ce.all()), ce is not None and bool(ce.any())
    samples = iwae_k(df)
    verdicts = "information" in df and bool(df["information"].fillna("").astype(bool).any())
    headers = [LABELS.get(k, k) for k in keys] + ["n"] + ["information"] * verdicts
    headers += [
        with_k(f"{h} {CROSS_ENTROPY}" if every and c in LIKELIHOOD_METRICS else h, c, samples)
        for c, h, _ in shown
    ]
    rows = []
    for i, (_, row) in enumerate(df.iterrows()):
        n = f"{row['n']}"
        n += f" +{row['n_failed']} failed" if row.get("n_failed", 0) else ""
        damaged = row.get("n_damaged", 0)
        unfinished = row.get("n_incomplete", 0) - damaged  # running, or stopped before the end
        n += f" +{unfinished} unfinished" if unfinished else ""
        n += f" +{damaged} damaged" if damaged else ""
        cells = [fmt_value(row[k]) for k in keys] + [n]
        cells += [VERDICTS.get(row["information"], "-")] * verdicts
        for c, _, d in shown:
            cell = fmt_stat(row, c, d)
            mark = some and not every and bool(ce.iloc[i]) and c in LIKELIHOOD_METRICS
            cells.append(f"{cell} {CROSS_ENTROPY}" if mark and cell != "-" else cell)
        rows.append(cells)
    return headers, rows


def table_notes(df: pd.DataFrame) -> list[str]:
    """The footnotes the marks in `by_setting_rows(df)` need, one line each."""
    notes = []
    if "cross_entropy" in df and df["cross_entropy"].astype(bool).any():
        notes.append(f"{CROSS_ENTROPY} {NOTES[CROSS_ENTROPY]}")
    if "test_mi_mean" in df and (df["test_mi_mean"] < 0).any():
        notes.append(f"{NOISE} {NOTES[NOISE]}")
    if "n" in df and (df["n"] == 1).any():
        notes.append(MORE_SEEDS)
    if "active_units_kl_mean" in df and df["active_units_kl_mean"].notna().any():
        notes.append(AU_RULES)
    if "information" in df and bool(df["information"].fillna("").astype(bool).any()):
        notes.append(VERDICT_NOTE)
    return notes


VERDICT_NOTE = (
    "information: informative = MI's 95% interval above 0.05 nats (where it straddles 0.05, a "
    "unit active by the covariance rule); KL without information = KL above 0 that MI puts at "
    "or below 0.05 nats (posteriors moved off the prior alike); collapsed = KL ≈ 0. MI with one "
    "seed: the interval over the estimator's draws; with more, over seeds."
)
