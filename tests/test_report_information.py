"""Did free bits buy information? The report's side: the verdict per setting, both active-unit
rules, MI with its interval, the IWAE k, and a recommendation that never calls a collapsed or
hollow setting "most active" (runs are hand-written files: tests/report_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from report_fixtures import make_sweep

from freebits_cli.report import build_report, by_setting_rows, by_setting_table, recommend
from freebits_cli.results.reader import find_run_dirs, read_runs


def tables(root: Path, keep: float = 0.9) -> tuple[pd.DataFrame, str]:
    runs, _ = read_runs(root, find_run_dirs(root, skip=root / "report"))
    by_setting = by_setting_table(runs).drop(columns="_example")
    return by_setting, recommend(by_setting, runs.keys, keep)[0]


def hollow_text_sweep(root: Path) -> None:
    """The issue's text sweep: λ = 1 meets its budget (KL 9.75, 16 units by the KL rule) with
    0 covariance-active units and MI −0.03 ± 0.15: KL without information; λ = 0 collapsed."""

    def numbers(lam: float, a: str, s: int) -> dict[str, object]:
        if lam == 0:
            return {"kl": 0.01, "active_units": 0, "mi": 0.0, "mi_lo": -0.01, "mi_hi": 0.01,
                    "marginal_kl": 0.01, "elbo": -60.0}  # fmt: skip
        return {"kl": 9.75, "active_units": 0, "mi": -0.03, "mi_lo": -0.18, "mi_hi": 0.12,
                "marginal_kl": 9.78, "elbo": -70.0, "extra_kl_units": 16}  # fmt: skip

    make_sweep(
        root / "text", [0, 1], ["none"], [0],
        lambda lam, a, s: {k: v for k, v in numbers(lam, a, s).items() if k != "extra_kl_units"},
        latent_dim=16, samples=False,
    )  # fmt: skip


def test_kl_without_information_is_never_recommended(tmp_path: Path) -> None:
    hollow_text_sweep(tmp_path)
    by_setting, text = tables(tmp_path)
    assert list(by_setting["information"]) == ["collapsed", "kl_without_information"]
    assert text.startswith("No setting bought information: 1 of 2 settings met their KL budget")
    assert "λ = 1, no annealing: KL 9.75 nats" in text and "the other 1 collapsed" in text
    assert "most active" not in text and "Recommended" not in text
    for remedy in ("free-bits mode", "more epochs", "pretraining"):
        assert remedy in text


def test_all_collapsed_says_so_with_what_to_try(tmp_path: Path) -> None:
    make_sweep(
        tmp_path / "c", [0, 0.5], ["none", "linear"], [0, 1],
        lambda lam, a, s: {"kl": 0.001, "active_units": 0, "mi": 0.0, "mi_lo": 0, "mi_hi": 0.01},
        samples=False,
    )  # fmt: skip
    by_setting, text = tables(tmp_path)
    assert set(by_setting["information"]) == {"collapsed"}
    assert text.startswith("No setting bought information: every setting collapsed")
    assert "most active" not in text and "pretraining" in text and "more epochs" in text


def mixed(root: Path) -> None:
    """λ = 0.5 informative (MI's interval above 0.05, 3 of 4 covariance-active units); λ = 1
    with the best ELBO but KL without information; λ = 0 collapsed."""
    table = {
        0: {"kl": 0.01, "active_units": 0, "mi": 0.0, "mi_lo": 0.0, "mi_hi": 0.01, "elbo": -98},
        0.5: {"kl": 4.0, "active_units": 3, "mi": 2.1, "mi_lo": 1.9, "mi_hi": 2.3, "elbo": -100},
        1: {"kl": 5.0, "active_units": 0, "mi": 0.01, "mi_lo": -0.1, "mi_hi": 0.1, "elbo": -97},
    }
    make_sweep(root / "m", table, ["none"], [0], lambda lam, a, s: table[lam], samples=False)


def test_ranked_by_information_then_elbo(tmp_path: Path) -> None:
    mixed(tmp_path)
    by_setting, text = tables(tmp_path, keep=0.7)
    assert list(by_setting["information"]) == ["collapsed", "informative", "kl_without_information"]
    # λ = 1 and λ = 0 have better ELBOs, but their codes carry nothing about x.
    assert text.startswith("2 of 3 settings bought no information about x")
    assert "Recommended: λ = 0.5, no annealing" in text


def test_no_informative_setting_keeps_the_share(tmp_path: Path) -> None:
    mixed(tmp_path)
    _, text = tables(tmp_path, keep=0.9)
    assert "No informative setting keeps 90%" in text
    assert "the informative setting with the most active units is λ = 0.5" in text


def test_informative_by_mi_alone_is_not_called_most_active(tmp_path: Path) -> None:
    table = {
        0.5: {"kl": 3.0, "active_units": 0, "mi": 0.8, "mi_lo": 0.6, "mi_hi": 1.0, "elbo": -99},
        1: {"kl": 6.0, "active_units": 0, "mi": 1.2, "mi_lo": 1.0, "mi_hi": 1.4, "elbo": -100},
    }
    make_sweep(tmp_path / "mi", table, ["none"], [0], lambda lam, a, s: table[lam], samples=False)
    by_setting, text = tables(tmp_path)
    assert set(by_setting["information"]) == {"informative"}
    assert "most active" not in text and "none has a unit active by the covariance rule" in text
    assert "λ = 0.5" in text  # the better ELBO


def test_tables_show_the_verdict_both_rules_mi_interval_and_k(tmp_path: Path) -> None:
    hollow_text_sweep(tmp_path)
    result = build_report(tmp_path)
    headers, rows = by_setting_rows(result.by_setting)
    cells = dict(zip(headers, rows[1], strict=True))
    assert cells["information"] == "KL without information"
    assert cells["AU (cov.)"].startswith("0.0") and "AU (KL)" in headers
    assert cells["MI (nats)"] == "≈ 0 ‡"  # below zero: noise around 0
    assert "marginal KL" in headers
    page = result.index_html.read_text(encoding="utf-8")
    assert "Cov_x(E_q[z_j|x]) &gt; δ" in page  # each rule defined under the table
    assert "KL without information" in page
    # One seed: MI's interval is the draws', shown in the table.
    informative = next(r for r in rows if r[headers.index("information")] == "collapsed")
    assert informative[headers.index("MI (nats)")] == "0.00 [-0.01, 0.01]"


def test_iwae_k_in_every_header_and_caption(tmp_path: Path) -> None:
    make_sweep(
        tmp_path / "k", [0, 1], ["none"], [0, 1],
        lambda lam, a, s: {"iwae": 98.0 + lam + s},
    )  # fmt: skip
    result = build_report(tmp_path)
    headers, _ = by_setting_rows(result.by_setting)
    assert [h for h in headers if "IWAE" in h] == ["IWAE NLL (k = 10, nats) †"]
    page = result.index_html.read_text(encoding="utf-8")
    runs = page[page.index('id="runs"') :]
    assert "test_iwae_nll (k = 10)" in runs
    figures = page[page.index('id="figures"') : page.index('id="runs"')]
    elbo = figures[figures.index('id="elbo"') :]
    assert "k = 10" in elbo[: elbo.index("</figure>")]
