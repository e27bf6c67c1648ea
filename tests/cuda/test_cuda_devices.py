"""Worker processes sharing one GPU, placement over two, and the memory model behind pack sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from gpu_sweeps import same_files, summaries, train, write_npz
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import cost, executor

pytestmark = pytest.mark.cuda
SMALL = [
    ("model.hidden", [64]),
    ("model.latent_dim", 4),
    ("train.epochs", 2),
    ("eval.iwae_samples", 10),
    ("grid.lambda", [0, 0.5, 1, 2]),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npz(tmp_path_factory.mktemp("devices") / "images.npz", 2560, 512)


def test_two_workers_on_one_gpu_give_the_numbers_of_one(images: Path, tmp_path: Path) -> None:
    overrides = [("dataset.name", str(images)), *SMALL]
    one = train(tmp_path / "one", overrides, device="cuda:0", pack_size=2, jobs=1)
    two = train(tmp_path / "two", overrides, device="cuda:0", pack_size=2, jobs=2)
    assert {s["device"] for s in summaries(two).values()} == {"cuda:0"}
    same_files(one, two)  # the same packs on the same GPU: the same numbers


@pytest.mark.gpus(2)
def test_packs_are_placed_on_both_gpus(images: Path, tmp_path: Path) -> None:
    sweep = train(tmp_path, [("dataset.name", str(images)), *SMALL], device="cuda", pack_size=1)
    assert {s["device"] for s in summaries(sweep).values()} == {"cuda:0", "cuda:1"}


# -- memory ----------------------------------------------------------------------------------------

#: The benchmark model with the evaluation defaults (IWAE with 100 samples, MI).
BENCHMARK = [
    ("model.hidden", [512, 256]),
    ("model.latent_dim", 32),
    ("train.epochs", 1),
    ("grid.lambda", [0.5]),
]


@pytest.fixture
def clean_memory() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    yield
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def peak_of(run: Callable[[], Any]) -> int:
    """Bytes `run` allocated on the GPU at its peak, above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@pytest.mark.parametrize("members", [1, 10, 64])
def test_memory_estimate_is_above_the_peak_and_within_twice_it(
    members: int, images: Path, tmp_path: Path, clean_memory: None, record: Callable[..., None]
) -> None:
    overrides = [("dataset.name", str(images)), *BENCHMARK, ("grid.seed", list(range(members)))]
    spec = build_spec(None, [("train.device", "cuda"), *overrides])
    run = spec.expand()[0]
    data = executor.dataset(run.dataset)
    estimate = cost.estimate_memory(run, data.image_shape, len(data.x_train), len(data.x_test))
    train(tmp_path / "warm-up", [*BENCHMARK, ("dataset.name", str(images))])  # cuBLAS, cuDNN
    peak = peak_of(lambda: train(tmp_path / "measured", overrides, pack_size=members))
    total = estimate.total(members)
    record(members=members, estimate_bytes=total, peak_bytes=peak, ratio=total / peak)
    assert total >= peak, f"K={members}: estimate {cost.gib(total)} below the peak {cost.gib(peak)}"
    assert total <= 2 * peak, f"K={members}: estimate {cost.gib(total)} > 2 × {cost.gib(peak)}"


def test_packs_are_cut_to_what_the_free_memory_holds_and_train(
    images: Path, tmp_path: Path, clean_memory: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With memory for 2.5 members left free, five runs train as packs of 2, 2, 1, no OOM."""
    overrides = [("dataset.name", str(images)), *BENCHMARK, ("grid.seed", list(range(5)))]
    run = build_spec(None, overrides).expand()[0]
    data = executor.dataset(run.dataset)
    memory = cost.estimate_memory(run, data.image_shape, len(data.x_train), len(data.x_test))
    room = int((memory.shared + 2.5 * memory.per_member) / cost.HEADROOM)
    sizes: list[int] = []
    real = executor.train_pack
    monkeypatch.setattr(
        executor, "train_pack", lambda pack, *a, **k: sizes.append(len(pack)) or real(pack, *a, **k)
    )
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(free - room, dtype=torch.uint8, device="cuda")  # leaves `room` free
    try:
        sweep = train(tmp_path, overrides, pack_size=10)
    finally:
        del ballast
    assert sorted(sizes) == [1, 2, 2]
    assert len(summaries(sweep)) == 5


def test_a_run_that_cannot_fit_is_refused_before_training(tmp_path: Path) -> None:
    free, _ = torch.cuda.mem_get_info()
    width = int((free / 16) ** 0.5) * 2  # a width × width layer: 16 bytes each, 4× the free memory
    result = CliRunner().invoke(
        app,
        ["sweep", "--device", "cuda", "--out", str(tmp_path), "--lambdas", "0",
         "--set", f"model.hidden=[{width},{width}]"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "one run needs about" in result.output and "GiB" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("metrics.csv")) and not list(tmp_path.rglob("checkpoint.pt"))
