"""`make install` / `make demo` take torch from the normal index by default, and PyTorch's
CPU-only wheels with TORCH=cpu (read from `make -n`: nothing is installed here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry(*args: str) -> subprocess.CompletedProcess[str]:
    """What `make -n -B ARGS` would run (every target remade, nothing executed)."""
    return subprocess.run(
        ["make", "-n", "-B", "PYTHON=python3", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def torch_line(output: str) -> str:
    (line,) = [x for x in output.splitlines() if "pip install" in x and '"torch' in x]
    return line


@pytest.mark.parametrize("target", ["install", "demo"])
def test_cpu_wheels_come_from_pytorchs_cpu_index(target: str) -> None:
    result = dry(target, "TORCH=cpu")
    assert result.returncode == 0, result.stderr
    line = torch_line(result.stdout)
    assert CPU_INDEX in line and "torchvision" in line
    # the package itself and its extras still come from the normal index
    rest = [x for x in result.stdout.splitlines() if "pip install" in x and "-e " in x]
    assert rest and all("--index-url" not in x for x in rest)
    if target == "demo":
        assert "freebits sweep --out results" in result.stdout


@pytest.mark.parametrize("target", ["install", "demo"])
def test_default_install_uses_the_normal_index(target: str) -> None:
    result = dry(target)
    assert result.returncode == 0, result.stderr
    assert "--index-url" not in result.stdout and "torch>=2.1" in torch_line(result.stdout)


def test_an_unknown_torch_variant_is_refused() -> None:
    result = dry("install", "TORCH=rocm")
    assert result.returncode != 0 and "TORCH=rocm" in result.stderr
    assert "pip install" not in result.stdout


def test_readme_documents_the_cpu_install() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo TORCH=cpu" in readme and "make install TORCH=cpu" in readme
