"""Which setting to recommend: the best ELBO per strategy against posterior collapse, the
ELBO/active-units Pareto front, and the recommended λ in words (per sweep)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from freebits_cli.report.labels import describe, fmt_pm, fmt_value, varying

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
    columns += ["recommended"]
    pareto = pd.concat(fronts)[columns] if fronts else pd.DataFrame(columns=columns)
    return " ".join(texts), pareto.reset_index(drop=True)


def _recommend_one(
    group: pd.DataFrame, keys: Sequence[str], keep: float
) -> tuple[str, pd.DataFrame | None]:
    """Among settings whose mean share of active units (Burda et al. 2015) is at least `keep`,
    the best mean test ELBO (on a tie, the smaller λ); the smallest such λ is named too when it
    differs, since a smaller free-bits floor changes the objective less (Kingma et al. 2016)."""
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

    qualify = ok[ok["active_share_mean"] >= keep - 1e-9]
    if qualify.empty:
        top = ok.sort_values(["active_units_mean", "test_elbo_mean"]).iloc[-1]
        text = f"No setting keeps {keep:.0%} of the latent units active; "
        text += f"the most active setting is {said(top)}."
    else:
        pick = qualify.sort_values(["test_elbo_mean", "lambda"], ascending=[False, True])
        pick = pick.iloc[0]
        front.loc[front.index == pick.name, "recommended"] = True
        cost = ok["test_elbo_mean"].max() - pick["test_elbo_mean"]
        text = f"Recommended: {said(pick)}, the best ELBO among settings keeping at least "
        text += f"{keep:.0%} of units active"
        text += f", {cost:.2f} nats below the best ELBO overall." if cost > 0 else "."
        smallest = qualify.sort_values(["lambda", "test_elbo_mean"], ascending=[True, False])
        if smallest.index[0] != pick.name:
            text += f" The smallest λ that does so is {said(smallest.iloc[0])}."
    names = [describe(r, shown) for _, r in front.iterrows()]
    more = f" and {len(names) - 6} more" if len(names) > 6 else ""
    text += f" Pareto front of ELBO vs active units: {'; '.join(names[:6])}{more}."
    return text, front
