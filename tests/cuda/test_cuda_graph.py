"""CUDA-graph replay against eager execution on the same pack, for every architecture.

Tolerance: none — the numbers must be equal bit for bit. A graph replays the very kernels the
eager step launches (same launch parameters, same memory layout rules, cuBLAS given a workspace on
the capture stream as on the default one), so with cuDNN restricted to deterministic algorithms
nothing is left to round differently. The step-level test holds everything else equal (the same
capturable Adam on both sides); the sweep-level test compares whole runs, `train.cuda_graph` on
and off, where the eager side uses the non-capturable fused Adam (the same kernel, its lr a host
float rather than a device tensor). A failure prints the largest difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from gpu_sweeps import same_files, summaries, train, write_npz, write_text
from test_gpu_rehearsal import ARCHS

from freebits_cli.engine.objective import binding_share, free_bits_kl
from freebits_cli.engine.step import PackStep, make_optimizer, set_learning_rate
from freebits_cli.models import build_model

pytestmark = pytest.mark.cuda
K, BATCH, STEPS = 4, 64, 50


@pytest.fixture(autouse=True)
def deterministic_cudnn() -> Iterator[None]:
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def make_step(arch: str, graph: bool) -> PackStep:
    spec, shape = ARCHS[arch]
    device = torch.device("cuda")
    model = build_model(spec, shape, K).to(device)
    model.reset([torch.Generator(device=device).manual_seed(k) for k in range(K)])
    lam = torch.tensor([0.0, 0.5, 1.0, 2.0], device=device)
    optimizer = make_optimizer(model.parameters(), 1e-3, 1e-8, device, capturable=True)
    return PackStep(
        model,
        optimizer,
        lambda kl, _: (free_bits_kl(kl, lam), binding_share(kl.detach(), lam)),
        BATCH,
        device,
        graph=graph,
    )


def run_steps(step: PackStep) -> None:
    for i in range(STEPS):
        gen = torch.Generator().manual_seed(i)  # the same data on both sides, made on the host
        step.batch(BATCH).copy_(torch.rand(K, BATCH, step.pixels, generator=gen))
        step.noise(BATCH).copy_(torch.randn(K, BATCH, step.latent, generator=gen))
        step.beta.copy_(torch.rand(K, generator=gen))
        if i == STEPS // 2:
            set_learning_rate(step.optimizer, 3e-4)  # as at an epoch boundary
        step.run(BATCH)
    torch.cuda.synchronize()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_step_replay_equals_eager_after_50_steps(arch: str) -> None:
    """The same pack, data, noise and capturable Adam, one side replayed from a graph: bit for bit
    after 50 steps. (A capture that falls back to eager fails any CUDA test: conftest's
    no_fallback.)"""
    eager, graphed = make_step(arch, graph=False), make_step(arch, graph=True)
    run_steps(eager)
    run_steps(graphed)
    assert graphed.graphs, "the step was not captured"
    for (name, p), q in zip(
        eager.model.named_parameters(), graphed.model.parameters(), strict=True
    ):
        assert torch.equal(p, q), f"{arch} {name}: max |Δ| {(p - q).abs().max().item():.3g}"
    assert torch.equal(eager.sums, graphed.sums), (eager.sums - graphed.sums).abs().max().item()


# -- whole sweeps, graph on and off, for each architecture including the LSTM -------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("graph-data")
    # 25 full steps of batch 128 per epoch, 2 epochs: 50 steps, none of them a partial batch.
    images = write_npz(root / "images.npz", 25 * 128, 512, side=16)
    text = write_text(root / "text", sentences=25 * 32)
    return {"images": str(images), "text": str(text)}


SWEEPS = {
    "mlp": [("model.hidden", [64, 32])],
    "conv": [("model.arch", "conv"), ("model.channels", [8, 16]), ("model.dense", 32)],
    "module": [("model.module", "tiny_vae:TinyVAE")],
    "lstm": [
        ("model.arch", "lstm"),
        ("model.embedding_dim", 16),
        ("model.hidden", [32]),
        ("train.batch_size", 32),
    ],
}


@pytest.mark.parametrize("arch", sorted(SWEEPS))
def test_sweep_with_graph_equals_sweep_without(
    arch: str,
    data: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replays = []
    real_replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(
        torch.cuda.CUDAGraph, "replay", lambda self: replays.append(1) or real_replay(self)
    )
    dataset = (
        [("dataset.name", "text"), ("dataset.data_dir", data["text"])]
        if arch == "lstm"
        else [("dataset.name", data["images"])]
    )
    overrides = [
        *dataset,
        ("model.latent_dim", 4),
        *SWEEPS[arch],
        ("grid.lambda", [0, 0.5, 2]),
        ("train.epochs", 2),
        ("eval.iwae_samples", 10),
    ]
    graphed = train(tmp_path / "graph", [*overrides, ("train.cuda_graph", True)])
    steps = len(replays)
    eager = train(tmp_path / "eager", [*overrides, ("train.cuda_graph", False)])
    assert len(replays) == steps, "train.cuda_graph: false replayed a graph"
    if arch == "lstm":  # one graph per length bucket: most steps, not all, are replays
        assert steps > 0, "no step of the LSTM was replayed from a graph"
    else:
        assert steps == 50, f"{steps} of 50 steps replayed"
    assert summaries(graphed).keys() == summaries(eager).keys()
    same_files(graphed, eager)
