"""The training step: what the CUDA-graph path relies on, checked on CPU, and bf16 autocast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train import small_spec, summaries, train

from freebits_cli.engine.objective import binding_share, free_bits_kl
from freebits_cli.engine.step import PackStep, make_optimizer, set_learning_rate
from freebits_cli.models import PackedVAE


def make_step(seed: int = 0) -> PackStep:
    model = PackedVAE(3, 64, [32], 4, "relu")
    model.reset([torch.Generator().manual_seed(seed + k) for k in range(3)])
    lam = torch.tensor([0.0, 0.5, 2.0])
    optimizer = make_optimizer(model.parameters(), 1e-3, 1e-8, torch.device("cpu"), False)
    return PackStep(
        model,
        optimizer,
        lambda kl, k: (
            free_bits_kl(kl, lam if k is None else lam[k : k + 1]),
            binding_share(kl.detach(), lam if k is None else lam[k : k + 1]),
        ),
        batch_size=16,
        device=torch.device("cpu"),
    )


def fill(step: PackStep, rows: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    step.batch(rows).copy_(torch.rand(3, rows, 64, generator=gen))
    step.noise(rows).copy_(torch.randn(3, rows, 4, generator=gen))
    step.beta.copy_(torch.tensor([1.0, 0.5, 0.1]))


def train_steps(step: PackStep, seeds: range, rows: int = 16) -> None:
    for seed in seeds:
        fill(step, rows, seed)
        step.run(rows)


def test_warm_up_before_capture_leaves_no_trace() -> None:
    """Capturing a CUDA graph first runs a few real steps; undone, they must not change training:
    parameters, Adam moments and step count, and the epoch sums as if they never ran."""
    plain, warmed = make_step(), make_step()
    train_steps(plain, range(2))
    train_steps(warmed, range(2))
    fill(warmed, 16, 99)
    warmed.warm_up()  # Adam state exists here; and on a fresh optimizer below
    fresh = make_step()
    fill(fresh, 16, 99)
    fresh.warm_up()
    assert fresh.optimizer.state  # the warm-up created Adam's state ...
    train_steps(warmed, range(2, 5))
    train_steps(plain, range(2, 5))
    train_steps(fresh, range(5))
    reference = make_step()
    train_steps(reference, range(5))
    for a, b in ((plain, warmed), (reference, fresh)):  # ... and left it as a fresh one
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(p, q)
        assert torch.equal(a.sums, b.sums)


def test_partial_batches_use_contiguous_views_of_the_same_buffers() -> None:
    step = make_step()
    assert step.batch(5).is_contiguous() and step.batch(5).shape == (3, 5, 64)
    assert step.batch(5).data_ptr() == step.batch(16).data_ptr()
    train_steps(step, range(2), rows=5)
    assert torch.isfinite(step.sums).all() and (step.sums[0] > 0).all()


def test_learning_rate_is_set_in_place_for_a_captured_optimizer() -> None:
    """A captured graph reads the very lr tensor it was captured with; a float lr is replaced."""
    model = PackedVAE(1, 8, [4], 2, "relu")
    captured = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-3), capturable=True)
    lr = captured.param_groups[0]["lr"]
    set_learning_rate(captured, 5e-4)
    assert captured.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(5e-4)
    plain = make_optimizer(model.parameters(), 1e-3, 1e-8, torch.device("cpu"), False)
    set_learning_rate(plain, 5e-4)
    assert plain.param_groups[0]["lr"] == 5e-4


def test_member_adam_updates_each_member_as_a_lone_adam() -> None:
    """Member k of a stacked parameter after MemberAdam steps equals a lone fused Adam's result,
    for shapes whose size is not a multiple of the SIMD width (where a stacked kernel differs)."""
    gen = torch.Generator().manual_seed(0)
    for shape in ((1, 4), (3, 5), (16, 4)):
        start = torch.randn(3, *shape, generator=gen)
        grads = [torch.randn(3, *shape, generator=gen) for _ in range(40)]
        packed = torch.nn.Parameter(start.clone())
        optimizer = make_optimizer([packed], 1e-2, 1e-8, torch.device("cpu"), False)
        for g in grads:
            packed.grad = g.clone()
            optimizer.step()
        for k in range(3):
            alone = torch.nn.Parameter(start[k : k + 1].clone())
            lone = torch.optim.Adam([alone], lr=1e-2, eps=1e-8, fused=True)
            for g in grads:
                alone.grad = g[k : k + 1].clone()
                lone.step()
            assert torch.equal(packed.detach()[k : k + 1], alone.detach()), (shape, k)


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path) -> None:
    spec = small_spec(("grid.lambda", [0, 1]), ("eval.iwae_samples", 0), ("train.epochs", 3))
    train(spec, tmp_path / "fp32")
    bf16 = small_spec(
        ("grid.lambda", [0, 1]),
        ("eval.iwae_samples", 0),
        ("train.epochs", 3),
        ("train.precision", "bf16"),
    )
    train(bf16, tmp_path / "bf16")
    fp32 = {s["lambda"]: s["test_elbo"] for s in summaries(tmp_path / "fp32").values()}
    half = {s["lambda"]: s["test_elbo"] for s in summaries(tmp_path / "bf16").values()}
    assert fp32.keys() == half.keys() == {0.0, 1.0}
    for lam in fp32:
        assert half[lam] != fp32[lam]  # autocast really ran in bfloat16 ...
        assert half[lam] == pytest.approx(fp32[lam], abs=1.0)  # ... and trains the same model
