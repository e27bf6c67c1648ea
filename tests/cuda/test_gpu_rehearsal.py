"""What the GPU checks rely on, rehearsed on the CPU (these run in `make test`): the CUDA-graph
capture path of the training step under a fake graph, and the statistics of packed vs alone."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fake_graph import FakeCUDAGraph, install
from gpu_sweeps import same_files, train
from scipy import stats
from seed_stats import compare_means

from freebits_cli.engine.objective import binding_share, free_bits_kl
from freebits_cli.engine.step import PackStep, make_optimizer, set_learning_rate
from freebits_cli.models import build_model
from freebits_cli.spec import DatasetSpec, ModelSpec
from freebits_cli.sweep.runs import dataset

K, BATCH = 3, 8
ARCHS = {
    "mlp": (ModelSpec(hidden=(24,), latent_dim=4), (8, 8)),
    "conv": (ModelSpec(arch="conv", channels=(4, 8), dense=16, latent_dim=4), (8, 8)),
    "module": (ModelSpec(module="tiny_vae:TinyVAE", latent_dim=3), (8, 8)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_step(arch: str, graph: bool, capturable: bool = True) -> PackStep:
    """A pack of K with λ = 0, 0.5, 2, on the CPU as CUDA would run it (batched, capturable Adam)."""
    spec, shape = ARCHS[arch]
    model = build_model(spec, shape, K)
    model.reset([torch.Generator().manual_seed(k) for k in range(K)])
    lam = torch.tensor([0.0, 0.5, 2.0])
    cpu = torch.device("cpu")
    optimizer = make_optimizer(model.parameters(), 1e-3, 1e-8, cpu, capturable)
    step = PackStep(
        model,
        optimizer,
        lambda kl, _: (free_bits_kl(kl, lam), binding_share(kl.detach(), lam)),
        BATCH,
        cpu,
    )
    step.want_graph = graph  # what PackStep sets from `graph=True` on a CUDA device
    return step


def train_steps(step: PackStep, steps: int, lr_at: int = -1) -> None:
    """`steps` steps of fresh data; every 7th a partial batch (eager, after the graph's replays);
    the learning rate drops at `lr_at`, as at an epoch boundary."""
    for i in range(steps):
        gen = torch.Generator().manual_seed(i)
        rows = BATCH if i % 7 else 3
        step.batch(rows).copy_(torch.rand(K, rows, step.pixels, generator=gen))
        step.noise(rows).copy_(torch.randn(K, rows, step.latent, generator=gen))
        step.beta.copy_(torch.rand(K, generator=gen))
        if i == lr_at:
            set_learning_rate(step.optimizer, 3e-4)
        step.run(rows)


def assert_same_state(a: PackStep, b: PackStep) -> None:
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q), (name, (p - q).abs().max().item())
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        for key, value in a.optimizer.state[p].items():
            assert torch.equal(value, b.optimizer.state[q][key]), key
    assert torch.equal(a.sums, b.sums)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_replayed_graph_trains_exactly_as_the_eager_step(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capture path — warm-up on a side stream and undone, capture, replay, partial batches
    eager in between, the learning rate changed in place — gives the eager step's numbers, bit for
    bit, when a "graph" replays exactly the operators it recorded on exactly the same tensors."""
    fakes = install(monkeypatch)
    eager, graphed = make_step(arch, graph=False), make_step(arch, graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a capture that fell back to eager would warn
        train_steps(eager, 20, lr_at=10)
        train_steps(graphed, 20, lr_at=10)
    assert_same_state(eager, graphed)
    (graph,) = fakes.graphs  # captured once, on the first full batch
    assert list(graphed.graphs.values()) == [graph]
    assert graph.replays == sum(1 for i in range(20) if i % 7)
    assert len(fakes.streams) == 1  # the warm-up ran on a side stream
    names = graph.op_names()
    # What it would capture: forward, backward, one fused Adam over the pack, the epoch sums.
    assert names.count("aten._fused_adam_.tensor_lr") == 1, names
    assert any("backward" in n for n in names) and names[-1] == "aten.add_.Tensor"


def test_a_python_float_is_frozen_into_the_graph_as_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fake is faithful where a real graph bites: a non-capturable Adam's float learning rate
    is baked into the captured update, so a later change never reaches the replays. (The trainer
    uses a capturable Adam with a tensor lr filled in place; the test above changes it.)"""
    install(monkeypatch)
    eager, graphed = make_step("mlp", False, False), make_step("mlp", True, False)
    train_steps(eager, 12)
    train_steps(graphed, 12)
    assert_same_state(eager, graphed)  # same lr throughout: same numbers
    eager, graphed = make_step("mlp", False, False), make_step("mlp", True, False)
    train_steps(eager, 12, lr_at=5)
    train_steps(graphed, 12, lr_at=5)
    differ = [
        not torch.equal(p, q)
        for p, q in zip(eager.model.parameters(), graphed.model.parameters(), strict=True)
    ]
    assert all(differ)


def test_a_step_that_waits_on_the_host_falls_back_to_eager_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`.item()` inside the step cannot be captured: the capture fails, PackStep warns (which the
    CUDA suite turns into a failure) and trains eagerly, with the eager step's numbers."""
    install(monkeypatch)
    eager, graphed = make_step("mlp", False), make_step("mlp", True)
    for step in (eager, graphed):
        real = step.free_bits

        def syncing(kl: torch.Tensor, k: int | None, real: Any = real) -> Any:
            fb, share = real(kl, k)
            if fb.sum().item() < 0:  # a host read; never true
                raise AssertionError
            return fb, share

        step.free_bits = syncing
    train_steps(eager, 10)
    with pytest.warns(UserWarning, match="CUDA graph capture failed, training eagerly"):
        train_steps(graphed, 10)
    assert not graphed.graphs and not graphed.want_graph
    assert_same_state(eager, graphed)


def test_fake_capture_runs_nothing_and_replays_what_it_recorded() -> None:
    """The fake itself: capturing leaves tensors as they were; each replay redoes the region."""
    from fake_graph import fake_graph

    total, x = torch.zeros(3), torch.ones(3)
    graph = FakeCUDAGraph()
    with fake_graph(graph):
        y = x * 2
        total.add_(y)
    assert torch.equal(total, torch.zeros(3))  # nothing ran, as in a real capture
    x.fill_(5.0)  # the graph reads the very tensor it captured
    graph.replay()
    graph.replay()
    assert torch.equal(total, torch.full((3,), 20.0)) and torch.equal(y, torch.full((3,), 10.0))
    assert graph.op_names() == ["aten.mul.Tensor", "aten.add_.Tensor"]


def test_a_sweep_with_the_fake_graph_equals_the_eager_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer around the graph, as on CUDA: capture on the first full batch, replays, the last
    partial batch of each epoch eager, the learning rate (cosine) changed in place every epoch."""
    from freebits_cli.engine import train as trainer

    fakes = install(monkeypatch)
    monkeypatch.setattr(  # what train.py asks for on a CUDA device
        trainer, "make_optimizer", lambda *args, capturable, **kw: make_optimizer(*args, True, **kw)
    )
    overrides = [
        ("model.hidden", [16]),
        ("model.latent_dim", 3),
        ("train.epochs", 3),
        ("train.lr_schedule", "cosine"),
        ("grid.lambda", [0, 1]),
        ("eval.iwae_samples", 5),
        ("eval.samples", 2),
    ]
    eager = train(tmp_path / "eager", overrides, device="cpu")
    assert fakes.graphs == []

    class Graphed(PackStep):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.want_graph = True

    monkeypatch.setattr(trainer, "PackStep", Graphed)
    graphed = train(tmp_path / "graph", overrides, device="cpu")
    (graph,) = fakes.graphs
    n_train = len(dataset(DatasetSpec()).x_train)  # digits
    assert graph.replays == 3 * (n_train // 128) and n_train % 128  # every full batch of 3 epochs
    same_files(eager, graphed)


# -- the statistics of "packed vs alone" -------------------------------------------------------


def test_welch_interval_matches_the_formula() -> None:
    a = np.array([-101.2, -100.4, -102.0, -100.9, -101.5])
    b = np.array([-100.1, -101.0, -99.8, -100.6, -100.2, -101.3])
    got = compare_means(a, b, confidence=0.95)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    # Welch-Satterthwaite degrees of freedom (Welch 1947).
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff = a.mean() - b.mean()
    half = stats.t.ppf(0.975, df) * se
    assert got.difference == pytest.approx(diff)
    assert (got.low, got.high) == pytest.approx((diff - half, diff + half))
    assert got.p_value == pytest.approx(2 * stats.t.sf(abs(diff) / se, df))
    assert got.indistinguishable == (abs(diff) <= half)


def test_same_distribution_passes_at_the_stated_rate_and_a_shift_is_caught() -> None:
    """10 seeds a side, as the GPU test: with no difference the 99% interval misses 0 about 1% of
    the time; a shift of 2.5 seed standard deviations is caught almost always."""
    rng = np.random.default_rng(0)
    trials = 2000
    same = [compare_means(*rng.normal(-90, 3, (2, 10))).indistinguishable for _ in range(trials)]
    misses = trials - sum(same)
    assert stats.binomtest(misses, trials, 0.01).pvalue > 1e-3, misses
    shifted = [
        compare_means(rng.normal(-90, 3, 10), rng.normal(-90 + 7.5, 3, 10)).indistinguishable
        for _ in range(500)
    ]
    assert sum(shifted) / 500 < 0.05


def test_no_spread_means_only_an_exact_match_is_indistinguishable() -> None:
    assert compare_means([1.0, 1.0], [1.0, 1.0]).indistinguishable
    assert not compare_means([1.0, 1.0], [1.0 + 1e-9, 1.0 + 1e-9]).indistinguishable
    with pytest.raises(ValueError, match="at least two"):
        compare_means([1.0], [1.0, 2.0])
