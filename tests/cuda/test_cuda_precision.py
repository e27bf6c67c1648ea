"""bf16 and tf32 against fp32 on a short benchmark sweep; fp32 stays the default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from gpu_sweeps import summaries, train

from freebits_cli.spec import SweepSpec

pytestmark = pytest.mark.cuda
#: The benchmark sweep (benchmarks/speed.py) on 10,000 Fashion-MNIST images, 3 epochs.
BENCHMARK = [
    ("model.hidden", [512, 256]),
    ("model.latent_dim", 32),
    ("grid.lambda", [0, 0.1, 0.5, 1, 2]),
    ("grid.anneal", ["none", "linear"]),
    ("train.epochs", 3),
    ("eval.iwae_samples", 0),
]
TOLERANCE = 0.5  # nats per example, on the mean final test ELBO of the sweep


def test_fp32_is_the_default() -> None:
    assert SweepSpec().expand()[0].train.precision == "fp32"


def test_bf16_and_tf32_stay_within_half_a_nat_of_fp32(
    fashion: Path, tmp_path: Path, record: Callable[..., None]
) -> None:
    elbos = {}
    for precision in ("fp32", "tf32", "bf16"):
        overrides = [("dataset.name", str(fashion)), *BENCHMARK, ("train.precision", precision)]
        found = summaries(train(tmp_path / precision, overrides))
        assert len(found) == 10
        elbos[precision] = [found[r]["test_elbo"] for r in sorted(found)]
        tf32_on = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        assert tf32_on == (precision == "tf32"), precision  # the switch followed the pack
    mean = {p: sum(v) / len(v) for p, v in elbos.items()}
    record(mean_test_elbo=mean, test_elbo=elbos)
    for precision in ("tf32", "bf16"):
        assert elbos[precision] != elbos["fp32"], f"{precision} changed nothing"
        gap = abs(mean[precision] - mean["fp32"])
        assert gap <= TOLERANCE, f"{precision}: mean test ELBO {gap:.3f} nats from fp32's"
