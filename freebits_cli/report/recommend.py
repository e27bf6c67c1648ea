"""Which setting to recommend: the best ELBO per strategy against posterior collapse, the
ELBO/active-units Pareto front, and the recommended λ in words (per sweep)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from freebits_cli.report.labels import describe, fmt_pm, fmt_value, varying
from freebits_cli.report.stats import INFORMATION
from freebits_cli.results.information import INFORMATIVE, KL_WITHOUT_INFORMATION

if TYPE_CHECKING:
    import pandas as pd

STRATEGIES = ("baseline", "annealing only", "free bits only", "both")  # seed text, Exercise 2


def strategies_table(by_setting: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Best test ELBO per strategy (baseline / annealing only / free bits only / both)."""
    import pandas as pd

    ok = by_setting[(by_setting["n"] > 0) & by_setting["test_elbo_mean"].notna()]
    shown = ["n", "test_elbo_mean", "test_elbo_std", "test_elbo_ci95", "active_units_mean"]
    shown += [c for c in ("test_kl_mean", "test_iwae_nll_mean") if c in ok]
    rows = []
    for sweep, group in ok.groupby("sweep", sort=False) if "sweep" in keys else [(None, ok)]:
        for name in STRATEGIES:
            same = group[group["strategy"] == name]
            if same.empty:
                continue
            best = same.loc[same["test_elbo_mean"].idxmax()]  # ties: the smaller λ (sorted)
            rec = {"sweep": sweep} if sweep is not None else {}
            rec |= {"strategy": name, "settings": len(same), "runs": int(same["n"].sum())}
            rows.append(rec | {k: best[k] for k in keys if k != "sweep"} | best[shown].to_dict())
    columns = ["sweep"] * ("sweep" in keys) + ["strategy", "settings", "runs"]
    return pd.DataFrame(rows, columns=columns + [k for k in keys if k != "sweep"] + shown)


def pareto_mask(elbo: Sequence[float], active: Sequence[float]) -> list[bool]:
    """True for settings no other setting beats on both ELBO and active units (≥ both, > one)."""
    pairs = list(zip(elbo, active, strict=True))
    return [
        not any(e2 >= e and a2 >= a and (e2 > e or a2 > a) for e2, a2 in pairs) for e, a in pairs
    ]


def recommend(
    by_setting: pd.DataFrame, keys: Sequence[str], keep: float
) -> tuple[str, pd.DataFrame]:
    """The recommendation in words, and the ELBO/active-units Pareto front (per sweep)."""
    import pandas as pd

    texts, fronts = [], []
    groups = by_setting.groupby("sweep", sort=False) if "sweep" in keys else [("", by_setting)]
    for sweep, group in groups:
        text, front = _recommend_one(group, [k for k in keys if k != "sweep"], keep)
        texts.append(f"Sweep {sweep}: {text}" if sweep else text)
        fronts += [front] if front is not None else []
    columns = [*keys, "n", "test_elbo_mean", "test_elbo_ci95", "active_units_mean"]
    columns += ["active_units_ci95", "active_units_lo", "active_units_hi", "active_share_mean"]
    columns += [INFORMATION, "recommended"]
    pareto = pd.concat(fronts)[columns] if fronts else pd.DataFrame(columns=columns)
    return " ".join(texts), pareto.reset_index(drop=True)


def _recommend_one(
    group: pd.DataFrame, keys: Sequence[str], keep: float
) -> tuple[str, pd.DataFrame | None]:
    """Rank settings by information first, then ELBO: only a setting whose code carries
    information about x (verdict `informative`, results/information.py) can be recommended, since
    free bits can be met by KL that says nothing about x (Hoffman & Johnson 2016). Among those
    whose mean share of covariance-active units (Burda et al. 2015) is at least `keep`, the best
    mean test ELBO (on a tie, the smaller λ); the smallest such λ is named too when it differs,
    since a smaller free-bits floor changes the objective less (Kingma et al. 2016). When none
    keeps the share, the informative setting with the most active units (never one with none);
    when no setting is informative, that is said plainly, with what to try."""
    ok = group[(group["n"] > 0) & group["test_elbo_mean"].notna()]
    ok = ok[ok["active_units_mean"].notna()]
    if ok.empty:
        return "No run has finished yet, so there is nothing to recommend.", None
    shown = varying(ok, keys)
    front = ok[pareto_mask(ok["test_elbo_mean"], ok["active_units_mean"])]
    front = front.sort_values("active_units_mean", kind="stable").copy()
    front["recommended"] = False

    def said(row: pd.Series) -> str:
        units = f"{row['active_units_mean']:.1f} of {fmt_value(row['latent_dim'])} units active"
        elbo = fmt_pm(row["test_elbo_mean"], row["test_elbo_ci95"])
        return f"{describe(row, shown)} ({units}, ELBO {elbo} nats)"

    verdicts = ok.get(INFORMATION, None)
    informative = ok if verdicts is None else ok[verdicts == INFORMATIVE]
    if informative.empty:
        text = no_information(ok, shown)
    else:
        text = ""
        if len(informative) < len(ok):
            text = f"{len(ok) - len(informative)} of {len(ok)} settings bought no information "
            text += "about x (see the information column) and are not considered. "
        qualify = informative[informative["active_share_mean"] >= keep - 1e-9]
        if qualify.empty:
            active = informative[informative["active_units_mean"] > 0]
            text += f"No informative setting keeps {keep:.0%} of the latent units active; "
            if active.empty:
                top = informative.sort_values(["test_elbo_mean", "lambda"]).iloc[-1]
                text += "none has a unit active by the covariance rule, only a measurable "
                text += f"mutual information; the best ELBO among them is {said(top)}."
            else:
                top = active.sort_values(["active_units_mean", "test_elbo_mean"]).iloc[-1]
                text += f"the informative setting with the most active units is {said(top)}."
        else:
            pick = qualify.sort_values(["test_elbo_mean", "lambda"], ascending=[False, True])
            pick = pick.iloc[0]
            front.loc[front.index == pick.name, "recommended"] = True
            cost = informative["test_elbo_mean"].max() - pick["test_elbo_mean"]
            text += f"Recommended: {said(pick)}, the best ELBO among informative settings "
            text += f"keeping at least {keep:.0%} of units active"
            text += f", {cost:.2f} nats below the best informative ELBO." if cost > 0 else "."
            smallest = qualify.sort_values(["lambda", "test_elbo_mean"], ascending=[True, False])
            if smallest.index[0] != pick.name:
                text += f" The smallest λ that does so is {said(smallest.iloc[0])}."
    names = [describe(r, shown) for _, r in front.iterrows()]
    more = f" and {len(names) - 6} more" if len(names) > 6 else ""
    text += f" Pareto front of ELBO vs active units: {'; '.join(names[:6])}{more}."
    return text, front


#: What to try when no setting's code carries information, in the words of the page.
REMEDIES = (
    "another free-bits mode (free_bits.mode: example, Li et al. 2019's per-example form, or "
    "total or group)",
    "more epochs (train.epochs)",
    "encoder pretraining as an autoencoder before the run (Li et al. 2019)",
)


def no_information(ok: pd.DataFrame, shown: Sequence[str]) -> str:
    """The recommendation when no setting is informative: say so, say which kind of failure
    it is (no rate at all, or rate that carries nothing about x), and what to try."""
    kinds = ok[INFORMATION].value_counts() if INFORMATION in ok else {}
    hollow = int(kinds.get(KL_WITHOUT_INFORMATION, 0))
    text = "No setting bought information: "
    if hollow:
        top = ok[ok[INFORMATION] == KL_WITHOUT_INFORMATION]
        top = top.sort_values(["test_kl_mean", "lambda"]).iloc[-1]
        text += (
            f"{hollow} of {len(ok)} settings met their KL budget without it (e.g. "
            f"{describe(top, shown)}: KL {top['test_kl_mean']:.2f} nats, but no unit active by "
            "the covariance rule and a mutual information that cannot be told from 0 — the "
            "posteriors moved off the prior alike for every x)"
        )
        rest = len(ok) - hollow
        text += f"; the other {rest} collapsed (KL ≈ 0)." if rest else "."
    else:
        text += "every setting collapsed (KL ≈ 0: the decoder ignores z)."
    text += f" Nothing here is recommended. Try {', '.join(REMEDIES[:-1])}, or {REMEDIES[-1]}."
    return text
