"""The Python examples of README and docs/*.md run as printed, in order, one namespace per page,
next to a results/default folder of a sweep with two schedules and two seeds (the shape a reader
gets from a real study, where a table keyed by λ alone has duplicate entries)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_fixtures import make_sweep

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


EXAMPLES = [page for page in PAGES if python_blocks(page)]


def test_the_docs_have_python_examples() -> None:
    names = {page.name for page in EXAMPLES}
    assert {"README.md", "api.md", "models.md"} <= names, names


@pytest.fixture
def a_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # the examples plot; no display here
    make_sweep(
        tmp_path / "results" / "default",
        [0, 0.5, 1],
        ["none", "linear"],
        [0, 1],
        lambda lam, a, s: {"elbo": -30 - 5 * lam - s, "kl": 3 + lam, "active_units": 2 + 2 * lam},
        epochs=3,
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_python_examples_run_as_printed(page: Path, a_study: Path) -> None:
    import matplotlib.pyplot as plt

    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    try:
        for i, block in enumerate(python_blocks(page)):
            try:
                exec(compile(block, f"{page.name}[{i}]", "exec"), namespace)
            except Exception as exc:  # name the page and block, not only the line
                raise AssertionError(f"{page.name}, python block {i}:\n{block}\n{exc!r}") from exc
    finally:
        plt.close("all")


def test_the_models_pages_own_module_meets_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/models.md's MyVAE, saved as the my_vae.py it names, passes the check a sweep runs
    before training, with the page's own `model:` line."""
    import yaml

    from freebits_cli.models import build_model
    from freebits_cli.spec import parse_spec

    page = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    (code,) = [b for b in python_blocks(ROOT / "docs" / "models.md") if "class MyVAE" in b]
    assert code.startswith("# my_vae.py\n")
    (tmp_path / "my_vae.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    line = next(x for x in page.splitlines() if x.startswith("model: {module: my_vae:MyVAE"))
    model = parse_spec(yaml.safe_load(line)).model
    packed = build_model(model, (1, 28, 28), 2)
    packed.check()  # raises a SpecError naming what breaks the contract
