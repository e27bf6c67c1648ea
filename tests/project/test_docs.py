"""The docs stay true: the spec reference is generated from the spec's field docstrings (and is
current), and every relative link in README and docs/ leads somewhere."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from freebits_cli import spec
from freebits_cli.spec import docs as spec_docs

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_spec_reference_is_current() -> None:
    assert spec_docs.DOC.read_text(encoding="utf-8") == spec_docs.render(), (
        "docs/spec.md is stale: run `make docs` (python -m freebits_cli.spec.docs)"
    )


def test_every_spec_field_is_in_the_reference() -> None:
    text = spec_docs.render()
    slurm = {f"slurm.{f.name}" for f in dataclasses.fields(spec.SlurmSpec)}
    paths = spec.valid_paths() | slurm
    assert len(paths) > 50
    missing = [p for p in sorted(paths) if f"**`{p}`**" not in text]
    assert not missing, f"not in docs/spec.md: {missing}"


def test_a_field_without_docstring_is_named() -> None:
    @dataclasses.dataclass(frozen=True)
    class Section:
        documented: int = 1
        """Said."""
        silent: int = 2

    assert spec_docs.field_docs(Section) == {"documented": "Said."}


def test_check_mode_says_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_docs, "DOC", tmp_path / "spec.md")
    assert spec_docs.main(["--check"]) == 1
    assert spec_docs.main([]) == 0 and spec_docs.main(["--check"]) == 0


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: broken links: {broken}"


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme]
    assert not unlinked, f"README does not link: {unlinked}"
