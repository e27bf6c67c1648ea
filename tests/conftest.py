"""Test-session settings.

`make test` runs two pytest-xdist workers on a 2-core machine. Left alone, torch gives each
process one thread per core, so two workers ask two cores for four threads, and oversubscribed
torch slows down many-fold (a conv test: 27 s alone, 200 s beside the other worker). Each worker,
and every process its tests start, computes on one thread instead.
"""

import os
from collections.abc import Iterator

import pytest
from threads import torch_threads

if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models on a shared machine: one thread is many times faster than several. Test files
    that train ask for it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """`one_thread` for module-scoped fixtures that train."""
    with torch_threads(1):
        yield
