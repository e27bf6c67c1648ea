"""Did free bits buy information? The report's side: the verdict per setting, both active-unit
rules, MI with its interval, the IWAE k, and a recommendation that never calls a collapsed or
hollow setting "most active" (runs are hand-written files: tests/report_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_sweep

from freebits_cli.report import build_report, by_setting_rows, by_setting_table, recommend
from freebits_cli.report.labels import CAPTIONS
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


# ------------------------------------------------------------------ figures


def info_sweep(root: Path, probe: bool = True) -> None:
    """λ = 0 collapsed, λ = 0.5 informative (MI 3 of KL 6), λ = 1 and 2 KL without information;
    two schedules, two seeds; the KL rule counts every unit held by free bits."""

    def numbers(lam: float, a: str, s: int) -> dict[str, object]:
        if lam == 0:
            out = {"kl": 0.01, "active_units": 0, "mi": 0.0, "mi_lo": -0.01, "mi_hi": 0.01,
                   "marginal_kl": 0.01, "elbo": -60.0 - s, "probe": 0.1}  # fmt: skip
        elif lam >= 1:
            out = {"kl": 16.0 * lam, "active_units": 0, "mi": 0.01 * s, "mi_lo": -0.15,
                   "mi_hi": 0.12, "marginal_kl": 16.0 * lam, "elbo": -70.0 - lam - s,
                   "probe": 0.12}  # fmt: skip
        else:
            out = {"kl": 6.0, "active_units": 3, "mi": 3.0 + 0.2 * s, "mi_lo": 2.8,
                   "mi_hi": 3.4, "marginal_kl": 3.0, "elbo": -62.0 - s, "probe": 0.8,
                   "kl_spread": [0.9, 0.8, 0.7, 0.0]}  # fmt: skip
        return out if probe else {k: v for k, v in out.items() if k != "probe"}

    make_sweep(root / "info", [0, 0.5, 1, 2], ["none", "linear"], [0, 1], numbers, latent_dim=4)


def legend_texts(fig: object) -> list[str]:
    from matplotlib.legend import Legend

    return [t.get_text() for lg in fig.findobj(Legend) for t in lg.get_texts()]  # type: ignore[attr-defined]


def test_au_figure_two_rules_distortion_and_probe(tmp_path: Path) -> None:
    from report_fixtures import figure_input

    from freebits_cli.report import info_figures as I

    info_sweep(tmp_path)
    inp = figure_input(tmp_path)
    inp.by_setting["active_units_kl_mean"] = 4.0  # the KL rule counts every unit held at λ
    fig = I.fig_active_units(inp)
    au, recon, probe = fig.axes
    kl_rule = [ln for ln in au.lines if ln.get_linestyle() == ":" and ln.get_marker() != "None"]
    assert len(kl_rule) == 2 and all(list(ln.get_ydata()) == [4.0] * 4 for ln in kl_rule)
    words = legend_texts(fig)
    assert {"covariance rule", "KL rule", "KL without information", "collapsed (KL ≈ 0)"} <= set(
        words
    )
    assert recon.get_ylabel().startswith("distortion") and "probe" in probe.get_ylabel()
    assert probe.get_ylim() == (0, 1)
    caption = CAPTIONS["active_units"][1]
    assert "Cov_x(E_q[z_j|x]) > δ" in caption and "KL rule" in caption
    # The verdict marks sit on the points of the settings without information (λ = 1, 2).
    crosses = [c for c in au.collections if c.get_label() == "KL without information"]
    assert len(crosses) == 1 and sorted(crosses[0].get_offsets()[:, 0]) == [1, 1, 2, 2]


def test_probe_panel_only_where_the_column_exists(tmp_path: Path) -> None:
    from report_fixtures import figure_input

    from freebits_cli.report import info_figures as I

    info_sweep(tmp_path, probe=False)
    assert len(I.fig_active_units(figure_input(tmp_path)).axes) == 2


def test_rate_split_stacks_information_under_marginal_kl(tmp_path: Path) -> None:
    from report_fixtures import figure_input

    from freebits_cli.report import info_figures as I

    info_sweep(tmp_path)
    fig = I.fig_rate_split(figure_input(tmp_path))
    assert [ax.get_title() for ax in fig.axes] == ["none", "linear"]
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    mi, marginal = bars[:4], bars[4:8]
    assert [round(b.get_height(), 6) for b in mi] == [0.0, 3.1, 0.005, 0.005]
    assert [round(b.get_height(), 6) for b in marginal] == [0.01, 3.0, 16.0, 32.0]
    assert all(
        m.get_y() == pytest.approx(b.get_height()) for m, b in zip(marginal, mi, strict=False)
    )
    signs = [t.get_text() for t in ax.texts]
    assert signs == ["○", "×", "×"]  # λ = 0 collapsed, λ = 1 and 2 without information
    assert "marginal KL(q(z)‖p(z)): rate without information" in legend_texts(fig)


def test_rate_split_not_drawn_without_mi(tmp_path: Path) -> None:
    make_sweep(tmp_path / "old", [0, 1], ["none"], [0], lambda lam, a, s: {}, samples=False)
    result = build_report(tmp_path)
    assert not (result.out_dir / "rate_split.png").exists()
    page = result.index_html.read_text(encoding="utf-8")
    assert "rate_split (no finished run estimated the mutual information" in page


def test_kl_heatmap_marks_the_informative_units(tmp_path: Path) -> None:
    from report_fixtures import figure_input

    from freebits_cli.report import run_figures as R

    info_sweep(tmp_path)  # λ = 0.5: units 0-2 spread (0.9, 0.8, 0.7 of their KL), unit 3 none
    inp = figure_input(tmp_path)
    fig = R.fig_kl_per_dim(inp)
    ax = fig.axes[0]
    (dots,) = [c for c in ax.collections if len(c.get_offsets())]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    marked = {(int(x), rows[int(y)]) for x, y in dots.get_offsets()}
    half = [r for r in rows if r.startswith("λ=0.5")]
    assert marked == {(j, r) for j in range(3) for r in half}  # 3 units of the 4, λ = 0.5 only
    assert R.INFORMATIVE_DOT in ax.get_xlabel()


def test_kl_heatmap_without_the_decomposition_marks_nothing(tmp_path: Path) -> None:
    from report_fixtures import figure_input

    from freebits_cli.report import run_figures as R

    make_sweep(tmp_path / "old", [0, 1], ["none"], [0], lambda lam, a, s: {"active_units": 2})
    ax = R.fig_kl_per_dim(figure_input(tmp_path)).axes[0]
    assert not ax.collections and R.INFORMATIVE_DOT not in ax.get_xlabel()


def test_prior_samples_say_when_they_fall_in_holes() -> None:
    from freebits_cli.report.sentences import HOLES_NATS, sentences_html

    run = {"originals": ["a b"], "prior_samples": ["the the the"], "reconstructions": ["a b"]}
    sentences = {"holey": run, "tight": run, "unmeasured": run}
    labels = {"holey": "λ=1", "tight": "λ=0", "unmeasured": "λ=2"}
    page = sentences_html(sentences, labels, {"holey": HOLES_NATS + 5.6, "tight": 0.2})
    blocks = {
        k: page[page.index(f"<summary>{v}") :].split("</details>")[0] for k, v in labels.items()
    }
    assert "Marginal KL 6.60 nats" in blocks["holey"] and "holes" in blocks["holey"]
    assert "holes" not in blocks["tight"] and "holes" not in blocks["unmeasured"]
