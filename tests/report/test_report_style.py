"""`freebits report --style paper|talk --width`: matplotlib style sheets shipped in the package set
the figures' size, fonts and PDF font embedding."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from report_fixtures import make_sweep
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.report.draw import STYLE_DIR, STYLES

runner = CliRunner()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_sweep(
        root / "demo",
        [0, 0.5, 1],
        ["none"],
        [0, 1],
        lambda lam, a, s: {
            "elbo": -100 - lam - s,
            "kl": 4 + lam,
            "active_units": 2 + 2 * lam,
            "iwae": 99 + lam,
        },
    )
    return root


def pdf_facts(path: Path) -> tuple[tuple[float, float], set[str], set[str], bool]:
    """(page size in inches, base font names, font subtypes, has embedded TrueType programs)."""
    data = path.read_bytes()
    box = re.search(rb"/MediaBox \[\s*([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)\s*\]", data)
    assert box is not None
    size = (float(box.group(3)) / 72, float(box.group(4)) / 72)
    fonts = {m.decode().split("+")[-1] for m in re.findall(rb"/BaseFont /([\w+\-]+)", data)}
    subtypes = {
        m.decode()
        for m in re.findall(rb"/Subtype /(Type0|Type1|Type3|TrueType|CIDFontType2)", data)
    }
    return size, fonts, subtypes, b"/FontFile2" in data


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_paper_style_one_column_pdf_with_truetype_fonts(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    result = runner.invoke(
        app, ["report", str(results), "--out", str(out), "--style", "paper", "--format", "pdf"]
    )
    assert result.exit_code == 0, result.output
    size, fonts, subtypes, truetype = pdf_facts(out / "active_units.pdf")
    # Two panels (active units, distortion) designed 8+5 : 5 keep their proportions, at the
    # height of one column of a two-column paper (a one-panel figure: 3.25 × 2.6 in).
    assert size == pytest.approx((3.25 * 13 / 8, 2.6), abs=0.01)
    assert fonts == {"STIXGeneral-Regular"}  # a Times-like serif, as the paper's text
    assert "Type3" not in subtypes and truetype  # Type 42: TrueType embedded, never Type 3
    assert png_size(out / "active_units.png") == (1584, 780)  # the page's PNG: 300 dpi
    wide, *_ = pdf_facts(out / "elbo.pdf")  # two panels keep their proportions: 8+5 : 8
    assert wide == pytest.approx((3.25 * 13 / 8, 2.6), abs=0.01)
    text = (out / "active_units.pdf").read_bytes()
    assert b"Active units vs" not in text  # no figure title: the paper's caption says it


def test_talk_style_and_width(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "talk"
    args = ["report", str(results), "--out", str(out), "--style", "talk", "--width", "10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # One panel: 10 × 5.625 in (16:9) at 150 dpi; the two-panel figure 13/8 as wide.
    width, height = png_size(out / "active_units.png")
    assert abs(width - 1500 * 13 / 8) < 1 and abs(height - 843.75) < 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--style", "poster"], "--style: 'poster' is neither default, paper, talk"),
        (["--width", "0.1"], "--width: 0.1 inches is not between 0.5 and 50"),
    ],
)
def test_bad_style_or_width_exit_2(results: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["report", str(results), *args])
    assert result.exit_code == 2 and needle in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_styles_are_matplotlib_style_sheets() -> None:
    from matplotlib import rc_params_from_file

    for name in STYLES:
        params = rc_params_from_file(STYLE_DIR / f"{name}.mplstyle", use_default_template=False)
        assert "figure.figsize" in params
    paper = rc_params_from_file(STYLE_DIR / "paper.mplstyle", use_default_template=False)
    assert (paper["pdf.fonttype"], paper["ps.fonttype"]) == (42, 42)
