"""What does the final mutual information cost, against an epoch of training, on the speed benchmark?

The speed benchmark's pack (benchmarks/speed.py: Fashion-MNIST, MLP 784-512-256-32, batch 128,
λ ∈ {0, 0.1, 0.5, 1, 2} × anneal {none, linear}, seed 0: 10 runs) is trained for `--epochs` epochs
by freebits' own trainer in this process; then, side by side on the same trained pack and the same
10,000 test images, the mutual information I(x;z) (He et al. 2019) is estimated by

  (old) the float64 matrix-product form every (sample, component) pair went through before, and
  (new) `freebits_cli.engine.metrics.mutual_information` as it is now,

each timed `--repeats` times (best kept), with the largest difference between the two estimates.
The ratio MI / epoch is what the issue's target (≤ 10% of an epoch) is about.

Run: PYTHONPATH=. python3 benchmarks/mi_cost.py [--data-dir DIR] [--epochs 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from freebits_cli.data import load_dataset  # noqa: E402
from freebits_cli.engine import metrics  # noqa: E402
from freebits_cli.engine.train import Member, PackTrainer  # noqa: E402
from freebits_cli.models import packing  # noqa: E402
from freebits_cli.spec.files import build_spec  # noqa: E402

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def mi_float64(
    model: object, x: torch.Tensor, generators: Sequence[torch.Generator]
) -> list[float]:
    """The estimator as it was: every pair's quadratic form as one float64 matrix product."""
    out = []
    for view, g in zip(packing.member_views(model), generators, strict=True):
        mu, logvar = view.encode(x.expand(1, *x.shape))
        n, latent = x.shape[0], view.latent_dim
        neg_entropy = (-0.5 * latent * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).double()
        z = (mu + metrics.draw_noise(mu.shape[1:], [g], x.device) * (0.5 * logvar).exp()).double()
        mu, logvar = mu.double(), logvar.double()
        w = (-logvar).exp()
        components = torch.cat([w, -2 * mu * w], -1).transpose(1, 2)  # (1, 2D, N)
        offset = latent * math.log(2 * math.pi) + logvar.sum(-1) + (mu.pow(2) * w).sum(-1)
        rows = max(1, metrics.MEMBER_BUDGET // (3 * 8 * n))
        log_qz = []
        for zs in z.split(rows, dim=1):
            q = torch.baddbmm(offset.unsqueeze(1), torch.cat([zs.pow(2), zs], -1), components)
            log_qz.append(torch.logsumexp(q.mul_(-0.5), dim=-1) - math.log(n))
        out.append(float((neg_entropy.mean(-1) - torch.cat(log_qz, dim=1).mean(-1))[0]))
    return out


def best_of(repeats: int, fn: object) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times), result


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEBIAN_DIR)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        ("dataset.name", "fashion-mnist"),
        ("dataset.data_dir", str(args.data_dir)),
        ("model.hidden", [512, 256]),
        ("model.latent_dim", 32),
        ("grid.lambda", [0, 0.1, 0.5, 1, 2]),
        ("grid.anneal", ["none", "linear"]),
        ("grid.seed", [0]),
        ("train.epochs", args.epochs),
        ("train.device", "cpu"),
    ]
    spec = build_spec(None, overrides)
    runs = spec.expand()
    data = load_dataset(runs[0].dataset)
    members = [Member(run, Path("."), {}) for run in runs]
    trainer = PackTrainer(members, data, torch.device("cpu"))
    epoch_times = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        trainer.train_epoch(epoch)
        epoch_times.append(time.perf_counter() - started)
    model, x = trainer.model.eval(), trainer.x_test
    k = len(members)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(1000 + i) for i in range(k)]

    with torch.no_grad():
        t_old, old = best_of(args.repeats, lambda: mi_float64(model, x, gens()))
        t_new, new = best_of(args.repeats, lambda: metrics.mutual_information(model, x, gens()))
    new = new.tolist()  # type: ignore[union-attr]
    epoch = min(epoch_times)
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"pack of {k} runs, {len(data.x_train)} training / {len(x)} test images")
    print(f"one epoch of the pack: {epoch:.2f} s ({epoch / k:.3f} s per run)")
    print("| MI estimator | seconds (pack) | per run | share of an epoch |")
    print("|---|---:|---:|---:|")
    for name, t in (("old: float64 products", t_old), ("new: metrics.mutual_information", t_new)):
        print(f"| {name} | {t:.2f} | {t / k:.3f} | {t / epoch:.1%} |")
    print(f"speed-up {t_old / t_new:.1f}×; MI per run (old → new):")
    for run, a, b in zip(runs, old, new, strict=True):  # type: ignore[arg-type]
        print(f"  {run.run_id}: {a:.6f} → {b:.6f} (Δ {b - a:+.1e})")
    worst = max(abs(a - b) for a, b in zip(old, new, strict=True))  # type: ignore[arg-type]
    print(f"largest |Δ| = {worst:.1e} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
