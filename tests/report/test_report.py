"""The report: numbers against hand computation, every file produced, bad input, speed.

Runs are hand-written files (tests/report_fixtures.py): the report reads only files, so no
training is needed. Only `full_report` (all formats) and the 200-run case draw figures.
"""

from __future__ import annotations

import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import make_sweep, write_run

from freebits_cli import schema
from freebits_cli.errors import ResultsError
from freebits_cli.report import (
    ReportResult,
    build_report,
    by_setting_rows,
    by_setting_table,
    recommend,
    strategies_table,
)
from freebits_cli.results.reader import find_run_dirs, read_csv, read_runs

FIGURES = ("active_units", "elbo", "pareto", "rate_distortion", "kl_per_dim", "kl_trajectories")
FIGURES += ("curves", "reconstructions", "samples")
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}


def tables(root: Path, keep: float = 0.9) -> tuple[pd.DataFrame, pd.DataFrame, str, pd.DataFrame]:
    """by_setting, strategies, recommendation, pareto without drawing anything."""
    runs, _ = read_runs(root, find_run_dirs(root, skip=root / "report"))
    by_setting = by_setting_table(runs).drop(columns="_example")
    text, pareto = recommend(by_setting, runs.keys, keep)
    return by_setting, strategies_table(by_setting, runs.keys), text, pareto


def row(df: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for key, value in where.items():
        mask &= df[key] == value
    assert mask.sum() == 1, f"{where}: {mask.sum()} rows"
    return df[mask].iloc[0]


def assert_valid_image(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(MAGIC[path.suffix]), path
    if path.suffix == ".png":
        assert b"IEND" in data[-16:], f"{path}: truncated PNG"
    if path.suffix == ".svg":
        assert b"<svg" in data[:2000] and data.rstrip().endswith(b"</svg>"), path
    if path.suffix == ".pdf":
        assert b"%%EOF" in data[-64:], path


# ---------------------------------------------------------------- statistics by hand


def test_by_setting_equals_hand_computation(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    for seed, elbo, au, kl in ((0, -100.0, 1, 5.0), (1, -102.0, 2, 6.0), (2, -105.0, 2, 7.0)):
        write_run(sweep, 0.0, "none", seed, elbo=elbo, active_units=au, kl=kl, samples=False)
    write_run(sweep, 1.0, "none", 0, elbo=-103.0, samples=False)
    write_run(sweep, 1.0, "none", 1, elbo=-104.0, samples=False)
    write_run(sweep, 2.0, "none", 0, elbo=-110.0, samples=False)
    write_run(sweep, 2.0, "none", 1, state="failed", samples=False)
    bs, *_ = tables(tmp_path)
    a = row(bs, **{"lambda": 0.0})
    # mean -307/3; s² = (2.333² + 0.333² + 2.667²)/2 = 6.3333; CI = t(0.975, 2)·s/√3
    assert a["n"] == 3 and a["seeds"] == "0,1,2"
    assert a["test_elbo_mean"] == pytest.approx(-102.333333, abs=1e-6)
    assert a["test_elbo_std"] == pytest.approx(2.516611, abs=1e-6)
    assert a["test_elbo_ci95"] == pytest.approx(6.251610, abs=1e-5)
    assert a["active_units_mean"] == pytest.approx(5 / 3)
    assert a["active_units_std"] == pytest.approx(0.577350, abs=1e-6)
    assert a["active_units_ci95"] == pytest.approx(1.434218, abs=1e-5)
    assert a["test_kl_ci95"] == pytest.approx(2.484138, abs=1e-5)  # s = 1
    assert a["test_recon_mean"] == pytest.approx(102.333333 - 6.0, abs=1e-6)
    assert a["active_share_mean"] == pytest.approx(5 / 12)  # latent size 4
    b = row(bs, **{"lambda": 1.0})
    assert (b["n"], b["test_elbo_mean"]) == (2, -103.5)
    assert b["test_elbo_std"] == pytest.approx(0.707107, abs=1e-6)
    assert b["test_elbo_ci95"] == pytest.approx(6.353103, abs=1e-5)  # t(0.975, 1) = 12.706205
    c = row(bs, **{"lambda": 2.0})  # one seed done, one failed: no spread to speak of
    assert (c["n"], c["n_failed"], c["test_elbo_mean"]) == (1, 1, -110.0)
    assert math.isnan(c["test_elbo_std"]) and math.isnan(c["test_elbo_ci95"])
    assert "test_iwae_nll_mean" not in bs  # no run recorded one


# ---------------------------------------------------------------- recommendation


def au_sweep(root: Path, numbers: dict[float, tuple[float, int]]) -> None:
    """λ -> (ELBO, active units of 10), two seeds whose ELBOs differ by ±0.1."""
    make_sweep(
        root / "rec",
        numbers,
        ["none"],
        [0, 1],
        lambda lam, a, s: {
            "elbo": numbers[lam][0] + (0.1 if s else -0.1),
            "active_units": numbers[lam][1],
            "latent_dim": 10,
            "samples": False,
        },
    )


def test_recommendation_smallest_lambda_keeping_share(tmp_path: Path) -> None:
    au_sweep(
        tmp_path, {0: (-100, 3), 0.1: (-100.5, 8), 0.5: (-101, 10), 1: (-103, 10), 2: (-106, 10)}
    )
    _, _, text, pareto = tables(tmp_path, keep=0.9)
    assert text.startswith("Recommended: λ = 0.5, no annealing")
    assert "1.00 nats below the best informative ELBO" in text
    assert sorted(pareto["lambda"]) == [0.0, 0.1, 0.5]  # λ = 1, 2: as many units, worse ELBO
    assert row(pareto, **{"lambda": 0.5})["recommended"]
    assert pareto["recommended"].sum() == 1
    assert tables(tmp_path, keep=0.8)[2].startswith("Recommended: λ = 0.1,")
    assert tables(tmp_path, keep=0.3)[2].startswith("Recommended: λ = 0,")


def test_recommendation_prefers_less_elbo_cost_and_names_smallest(tmp_path: Path) -> None:
    au_sweep(tmp_path, {0: (-100, 2), 0.5: (-103, 10), 1: (-101, 10)})
    text = tables(tmp_path, keep=0.9)[2]
    assert text.startswith("Recommended: λ = 1,")
    assert "The smallest λ that does so is λ = 0.5" in text


def test_recommendation_when_no_setting_keeps_share(tmp_path: Path) -> None:
    au_sweep(tmp_path, {0: (-100, 2), 1: (-102, 6)})
    text = tables(tmp_path, keep=0.9)[2]
    assert text.startswith("No informative setting keeps 90% of the latent units active")
    assert "λ = 1" in text


# ---------------------------------------------------------------- Exercise 2: strategies


def test_strategies_best_elbo_each(tmp_path: Path) -> None:
    elbo = {(0, "none"): -100, (0, "linear"): -99, (0.5, "none"): -98, (1, "none"): -97.5}
    elbo |= {(0.5, "linear"): -96, (1, "linear"): -96.5}
    make_sweep(
        tmp_path / "ex2",
        [0, 0.5, 1],
        ["none", "linear"],
        [0, 1],
        lambda lam, a, s: {"elbo": elbo[(lam, a)] - s, "samples": False},
    )
    st = tables(tmp_path)[1]
    assert list(st["strategy"]) == ["baseline", "annealing only", "free bits only", "both"]
    best = {
        r["strategy"]: (r["lambda"], r["anneal"], r["test_elbo_mean"]) for _, r in st.iterrows()
    }
    assert best == {
        "baseline": (0.0, "none", -100.5),
        "annealing only": (0.0, "linear", -99.5),
        "free bits only": (1.0, "none", -98.0),
        "both": (0.5, "linear", -96.5),
    }
    assert list(st["settings"]) == [1, 1, 2, 2] and list(st["runs"]) == [2, 2, 4, 4]


# ---------------------------------------------------------------- the full report


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    """A sweep with IWAE, plus one of each problem: failed, torn CSV, corrupt summary.json,
    a run with no epochs, an unreadable metrics.csv."""
    root = tmp_path_factory.mktemp("results")
    sweep = root / "demo"
    make_sweep(
        sweep,
        [0, 0.5, 1],
        ["none", "linear"],
        [0, 1],
        lambda lam, a, s: {
            "elbo": -100 - 2 * lam - s - (a == "linear"),
            "kl": 4 + 3 * lam,
            "active_units": min(4, 1 + 2 * lam),
            "iwae": 98 + lam,
        },
    )
    write_run(sweep, 2, "none", 0, state="failed", reason="loss is NaN at step 40")
    torn = write_run(sweep, 2, "none", 1, state="incomplete") / "metrics.csv"
    torn.write_text(torn.read_text() + "lam2-none-s1,2,batch,none,1,4,40,1.0,9")  # kill -9
    corrupt = write_run(sweep, 2, "linear", 0) / "summary.json"
    corrupt.write_text('{"run_id": "lam2-linear-s0", "test_el')
    empty = write_run(sweep, 2, "linear", 1, state="incomplete") / "metrics.csv"
    empty.write_text(empty.read_text().splitlines()[0] + "\n")
    (sweep / "runs" / "lam0.5-linear-s1" / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage")
    return build_report(root)


def test_every_figure_is_a_valid_png(full_report: ReportResult) -> None:
    for stem in FIGURES:
        assert_valid_image(full_report.out_dir / f"{stem}.png")
    tables = (schema.SUMMARY_CSV, schema.BY_SETTING_CSV, schema.STRATEGIES_CSV, schema.PARETO_CSV)
    tables += (schema.REMEDIES_CSV,)
    for name in (*tables, schema.INDEX_HTML):
        assert (full_report.out_dir / name).is_file()
    assert all(p.is_file() for p in full_report.files)
    assert len(set(full_report.files)) == len(full_report.files) == 9 + len(tables) + 1


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        if tag == "a" and not (found.get("href") or "#").startswith("#"):
            self.links.append(found["href"] or "")


def test_index_html_references_only_existing_valid_files(full_report: ReportResult) -> None:
    page = _Links()
    page.feed(full_report.index_html.read_text(encoding="utf-8"))
    assert sorted(Path(s).stem for s in page.images) == sorted(FIGURES)
    for ref in page.images + page.links:
        assert "/" not in ref and ":" not in ref, f"{ref}: not a file beside index.html"
        assert (full_report.out_dir / ref).is_file(), ref
    for ref in page.images:
        assert_valid_image(full_report.out_dir / ref)


def test_index_html_says_what_happened(full_report: ReportResult) -> None:
    text = full_report.index_html.read_text(encoding="utf-8")
    assert "loss is NaN at step 40" in text and "lam2-none-s0" in text  # which failed, why
    assert "grid:" in text and "name: demo" in text  # the spec
    assert full_report.recommendation.split(" (")[0] in text
    for needle in ("<b>12</b>done", "<b>1</b>failed", "<b>3</b>running or interrupted"):
        assert needle in text
    assert "last line is torn" in text


def test_counts_warnings_and_summary(full_report: ReportResult) -> None:
    assert full_report.counts == {"done": 12, "failed": 1, "incomplete": 3}
    warnings = "\n".join(full_report.warnings)
    assert "lam2-none-s1: metrics.csv: last line is torn" in warnings
    assert "lam2-linear-s0: summary.json is corrupt" in warnings
    assert "lam2-linear-s1: no epochs recorded" in warnings
    assert "lam0.5-linear-s1: metrics.csv is unreadable" in warnings
    assert len(full_report.warnings) == 4  # one line per problem, nothing else
    summary = pd.read_csv(full_report.out_dir / "summary.csv")
    assert len(summary) == 16
    assert set(summary["state"]) == {"done", "failed", "incomplete"}
    torn = summary[summary["run_id"] == "lam2-none-s1"].iloc[0]
    assert torn["epochs_done"] == 3  # the torn 4th epoch was dropped
    by_setting = pd.read_csv(full_report.out_dir / "by_setting.csv")
    assert len(by_setting) == 8  # 3 λ × 2 schedules done, plus λ = 2 (failed/incomplete only)
    assert row(by_setting, **{"lambda": 0.5, "anneal": "linear"})["n"] == 2  # summary still read
    assert row(by_setting, **{"lambda": 2, "anneal": "none"})["n"] == 0
    assert row(by_setting, **{"lambda": 1, "anneal": "none"})["test_iwae_nll_mean"] == 99


def test_by_setting_rows_for_the_terminal(full_report: ReportResult) -> None:
    headers, rows = by_setting_rows(full_report.by_setting)
    assert headers == [
        "λ",
        "schedule",
        "n",
        "information",  # the verdict (results/information.py) on the setting's means
        "ELBO (nats) †",  # the fixtures' runs: grayscale digits, Bernoulli decoder
        "recon (nats) †",
        "AU (cov.)",  # both active-unit rules side by side
        "AU (KL)",
        "KL (nats)",
        "IWAE NLL (k = 10, nats) †",  # the IWAE bound's k
    ]
    first = rows[0]  # λ = 0, none: ELBO -100, -101 -> -100.50 ± 12.706·0.7071/√2 = 6.35
    assert first[:5] == ["0", "none", "2", "informative", "-100.50 ± 6.35"]
    assert any(r[2] == "0 +1 failed +1 unfinished" for r in rows)
    assert all(len(r) == len(headers) and all(isinstance(c, str) for c in r) for r in rows)


# ---------------------------------------------------------------- bad input


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such folder"):
        build_report(tmp_path / "nope")


def test_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ResultsError, match="not a folder"):
        build_report(tmp_path / "f.txt")


def test_empty_folder_and_folder_without_runs(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no runs found") as err:
        build_report(tmp_path)
    assert str(tmp_path) in str(err.value) and err.value.exit_code == 2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text("{}")  # not under runs/
    with pytest.raises(ResultsError, match="no runs found"):
        build_report(tmp_path)


def test_only_unreadable_runs(tmp_path: Path) -> None:
    run = tmp_path / "s" / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{{{")
    with pytest.raises(ResultsError, match="none of the 1 run folder"):
        build_report(tmp_path)


def test_bad_format_and_share(tmp_path: Path) -> None:
    write_run(tmp_path / "s", 0.0, samples=False)
    with pytest.raises(ResultsError, match="'jpeg'"):
        build_report(tmp_path, formats=("png", "jpeg"))
    with pytest.raises(ResultsError, match=r"1\.5"):
        build_report(tmp_path, keep_share=1.5)


def test_only_failed_runs_still_report(tmp_path: Path) -> None:
    write_run(tmp_path / "s", 0.5, "none", 0, state="failed", reason="inf in KL")
    write_run(tmp_path / "s", 0.5, "none", 1, state="failed", reason="inf in KL")
    result = build_report(tmp_path, out_dir=tmp_path / "out")
    assert result.counts == {"done": 0, "failed": 2, "incomplete": 0}
    assert "nothing to recommend" in result.recommendation
    assert (tmp_path / "out" / "curves.png").is_file()  # partial curves still drawn
    assert not (tmp_path / "out" / "active_units.png").exists()  # nothing finished to average
    text = result.index_html.read_text(encoding="utf-8")
    assert "inf in KL" in text and "Not drawn: active_units (no finished run)" in text
    assert result.warnings == ()


def test_svg_and_pdf_formats(tmp_path: Path) -> None:
    """Each asked format is written and valid; only-PDF still gives the page a PNG to show;
    a figure that can no longer be drawn does not leave last time's file behind."""
    write_run(tmp_path / "s", 0.5, "none", 0, state="failed")  # one figure: the curves
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "elbo.svg").write_text("<svg>stale</svg>")
    result = build_report(tmp_path, formats="svg,pdf")
    written = sorted(p.name for p in result.files if p.suffix != ".csv")
    assert written == ["curves.pdf", "curves.svg", "index.html"]
    for name in ("curves.svg", "curves.pdf"):
        assert_valid_image(result.out_dir / name)
    assert not (tmp_path / "report" / "elbo.svg").exists()
    assert 'src="curves.svg"' in result.index_html.read_text(encoding="utf-8")
    result = build_report(tmp_path, formats=["pdf"])
    assert 'src="curves.png"' in result.index_html.read_text(encoding="utf-8")
    assert_valid_image(result.out_dir / "curves.png")


def test_read_csv_drops_torn_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,test_elbo,anneal\n1,-5.0,none\n2,oops,none\n2,-4.0,none\nx,1,a\n1,2\n3,-3"
    )
    warnings: list[str] = []
    df = read_csv(path, ("epoch",), warnings.append)
    assert df is not None
    assert list(df["epoch"]) == [1, 2] and list(df["test_elbo"]) == [-5.0, -4.0]
    assert warnings == [
        "metrics.csv: last line is torn (cut off mid-write); ignored",
        "metrics.csv: 2 malformed line(s) ignored",
        "metrics.csv: 1 unparsable value(s) read as missing",
        "metrics.csv: duplicate rows for the same epoch; kept the last",
    ]


def test_read_csv_keeps_unknown_text_columns_quietly(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,binarize,test_elbo,note\n1,none,-5.0,warm\n2,none,,cool\n")
    warnings: list[str] = []
    df = read_csv(path, ("epoch",), warnings.append)
    assert df is not None and warnings == []
    assert list(df["binarize"]) == ["none", "none"] and list(df["note"]) == ["warm", "cool"]
    assert df["test_elbo"].iloc[0] == -5.0 and math.isnan(df["test_elbo"].iloc[1])


# ---------------------------------------------------------------- layout


def test_report_folder_skipped_and_nested_roots(tmp_path: Path) -> None:
    write_run(tmp_path / "a", 0.0, samples=False)
    write_run(tmp_path / "b", 1.0, samples=False)
    fake = tmp_path / "report" / "runs" / "x"  # what a report folder must never be read as
    fake.mkdir(parents=True)
    (fake / "config.json").write_text("{}")
    assert len(find_run_dirs(tmp_path, skip=tmp_path / "report")) == 2
    assert len(find_run_dirs(tmp_path / "a")) == 1  # a single sweep folder
    assert len(find_run_dirs(tmp_path / "a" / "runs" / "lam0-none-s0")) == 1  # one run
    bs = tables(tmp_path)[0]
    assert list(bs["sweep"]) == ["a", "b"]  # two sweeps: the sweep is part of the setting


def test_extra_grid_field_is_a_setting_column(tmp_path: Path) -> None:
    for dim in (8, 16):
        for seed in (0, 1):
            write_run(
                tmp_path / "s",
                0.5,
                "none",
                seed,
                latent_dim=dim,
                samples=False,
                extra={"model.latent_dim": dim},
                elbo=-dim - seed,
            )
    bs = tables(tmp_path)[0]
    assert list(bs["model.latent_dim"]) == [8, 16] and list(bs["n"]) == [2, 2]
    assert "model.latent_dim" in by_setting_rows(bs)[0]


def test_report_modules_do_not_import_torch() -> None:
    code = (
        "import sys, freebits_cli.report; m = sys.modules; print('torch' in m, 'matplotlib' in m)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    for path in (Path(__file__).parents[2] / "freebits_cli" / "report").glob("*.py"):
        source = path.read_text()
        assert "import torch" not in source and "import matplotlib.pyplot" not in source


# ---------------------------------------------------------------- scale


def test_report_of_200_runs(tmp_path: Path) -> None:
    make_sweep(
        tmp_path / "big",
        [0, 0.1, 0.5, 1, 2],
        ["none", "linear", "sigmoid", "cyclical"],
        range(10),
        lambda lam, a, s: {
            "elbo": -90 - lam - 0.1 * s,
            "kl": 3 + lam,
            "active_units": min(16, 2 + 7 * lam),
            "iwae": 88 + lam,
        },
        latent_dim=16,
        epochs=20,
    )
    result = build_report(tmp_path)  # its time is a benchmark's to judge, not a test's
    assert result.counts["done"] == 200 and result.warnings == ()
    assert len(result.by_setting) == 20
