"""`make test` stays within a few minutes on 2 cores: two pytest-xdist workers, one thread each."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_make_test_runs_two_workers_and_installs_them() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"pytest\b.*-n 2\b.*--dist loadfile", recipe), recipe
    dev = re.search(r"^dev = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)
    assert dev and '"pytest-xdist' in dev.group(1)


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="runs under pytest-xdist")
def test_a_worker_computes_on_one_thread() -> None:
    import torch

    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # and so do the processes its tests start
