"""The remedies on the path a GPU takes, rehearsed on the CPU (these run in `make test`): BN-VAE's
running statistics inside a captured step, and per-member learning rates over a batched pack."""

from __future__ import annotations

import warnings

import pytest
import torch
from fake_graph import install
from test_gpu_rehearsal import BATCH, K, assert_same_state, train_steps

from freebits_cli.engine.objective import binding_share, free_bits_kl
from freebits_cli.engine.step import MemberAdam, PackStep, make_optimizer
from freebits_cli.models import build_model
from freebits_cli.spec import ModelSpec

pytestmark = pytest.mark.usefixtures("one_thread")
BN = ModelSpec(hidden=(24,), latent_dim=4, mu_bn_gamma=0.6)


def bn_step(graph: bool) -> PackStep:
    """A BN-VAE pack of K, batched as on CUDA, with the capturable Adam the graph path uses."""
    model = build_model(BN, (8, 8), K)
    model.reset([torch.Generator().manual_seed(k) for k in range(K)])
    lam = torch.tensor([0.0, 0.5, 2.0])
    cpu = torch.device("cpu")
    optimizer = make_optimizer(model.parameters(), 1e-3, 1e-8, cpu, True)
    step = PackStep(
        model,
        optimizer,
        lambda kl, _: (free_bits_kl(kl, lam), binding_share(kl.detach(), lam)),
        BATCH,
        cpu,
    )
    step.want_graph = graph
    return step


def test_bn_vae_replayed_graph_equals_eager_running_statistics_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The running statistics are updated in place inside the step: a replay must update them as
    the eager step does, and the warm-up before the capture must leave them as they were."""
    fakes = install(monkeypatch)
    eager, graphed = bn_step(graph=False), bn_step(graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_steps(eager, 20, lr_at=10)
        train_steps(graphed, 20, lr_at=10)
    assert fakes.graphs and graphed.graphs
    assert_same_state(eager, graphed)
    running = dict(eager.model.named_parameters())["running_var"]
    assert not torch.equal(running, torch.ones_like(running))  # the statistics did move


def test_member_adam_over_a_batched_pack_gives_each_member_its_own_lr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """train.lr_decay: plateau on CUDA: the pack runs batched, gradients stacked, and MemberAdam
    updates each member's slice at its own lr: each member close to a batched torch Adam at that
    lr (batched kernels round differently from sliced ones, so to float rounding)."""
    install(monkeypatch)
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(K, 6, 5, generator=gen)
    grads = [torch.randn(K, 6, 5, generator=gen) for _ in range(15)]
    packed = torch.nn.Parameter(start.clone())
    optimizer = make_optimizer([packed], 1e-2, 1e-8, cpu, False, per_member=True)
    assert isinstance(optimizer, MemberAdam)
    optimizer.lr_scales = [1.0, 0.5, 0.25]
    for g in grads:
        packed.grad = g.clone()  # a stacked gradient, as the batched step leaves it
        optimizer.step()
    for k, scale in enumerate(optimizer.lr_scales):
        alone = torch.nn.Parameter(start.clone())
        reference = torch.optim.Adam([alone], lr=1e-2 * scale, eps=1e-8, fused=True)
        for g in grads:
            alone.grad = g.clone()
            reference.step()
        torch.testing.assert_close(packed.detach()[k], alone.detach()[k], rtol=1e-6, atol=1e-7)
