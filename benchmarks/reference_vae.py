"""Reproduce the canonical PyTorch VAE example on Fashion-MNIST, with freebits and with a plain loop.

What is measured, and why
-------------------------
pytorch/examples `vae/main.py` is the VAE most people have run: a 784-400-20 ReLU MLP, a sigmoid
decoder scored with summed binary cross-entropy against the grayscale pixels, Adam at 1e-3, batch
128, a shuffling `DataLoader` over torchvision's dataset. With λ = 0 and no annealing freebits trains
exactly that objective, so its test loss must match the example's within seed-to-seed noise. If it
does not, something in freebits (data scaling, initialisation, loss scaling, the batched trainer,
the evaluation) differs from the usual way of writing a VAE.

This script trains, for the same epochs and seeds:

* the **reference**: the example's code, written the usual way (`nn.Module` with fc1/fc21/fc22/
  fc3/fc4, `torchvision.datasets.FashionMNIST` + `ToTensor` + `DataLoader(shuffle=True)`,
  `F.binary_cross_entropy(sigmoid(...), x, reduction="sum") + KLD`, one model per seed, tested after
  every epoch as the example does: the mean over the test set of BCE-sum + KLD with a sampled z);
* **freebits**: `freebits sweep` in a subprocess (all seeds packed into one batched model); its
  comparable number is `-test_elbo` from each run's `summary.json` (nats per example, one sampled z,
  true KL, β = 1: the same quantity).

It prints per-seed and per-epoch test losses, mean ± sample std of both, the difference of the means
and whether it lies within seed-to-seed noise, plus each side's wall time (the reference trains the
seeds one after another; freebits trains them as one pack, in a fresh process that also loads data).

Seeds cannot be matched across the two (different RNG streams), so first a deterministic **lockstep**
check removes the noise: both models start from the same weights and take the same batches and
reparameterisation noise for `--lockstep-steps` Adam steps; it prints how far the weights drift
apart. freebits minimises the loss per example, the example the sum over the batch; Adam ignores the
loss scale except through ε, so the two follow each other exactly only when freebits' ε is divided by
the batch size. `--eps-matched` also trains freebits with that ε (`train.adam_eps = 1e-8 / 128`).

Fashion-MNIST has no published number for this model; the comparison is relative. (For MNIST,
pytorch/examples reach a test loss of about 106.7 at epoch 7.)

Run: `.venv/bin/python benchmarks/reference_vae.py --epochs 3 --seeds 0,1,2`
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------------------------------------
# The reference: pytorch/examples vae/main.py, adapted only to read Fashion-MNIST offline.


class VAE(nn.Module):
    """The example's model: 784-400-20 encoder, 20-400-784 decoder, ReLU, sigmoid output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(
    recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """Reconstruction + KL divergence, summed over all elements and the batch (as the example)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # Kingma & Welling 2014, Appendix B: -KL = ½ Σ (1 + log σ² − μ² − σ²)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def torchvision_root(data_dir: Path, scratch: Path) -> Path:
    """A root that torchvision's FashionMNIST accepts offline: ROOT/FashionMNIST/raw/<uncompressed>.

    Debian's `dataset-fashion-mnist` ships gzipped IDX files; torchvision (download=False) checks
    for the uncompressed names, so decompress (or link) them into a scratch folder.
    """
    raw = scratch / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in IDX_STEMS:
        target = raw / stem
        plain, packed = data_dir / stem, data_dir / f"{stem}.gz"
        if plain.is_file():
            target.symlink_to(plain.resolve())
        elif packed.is_file():
            with gzip.open(packed, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            raise SystemExit(f"error: {data_dir} holds neither {stem} nor {stem}.gz")
    return scratch


def train_reference(
    seed: int, epochs: int, root: Path, batch_size: int, lr: float, device: torch.device
) -> tuple[list[float], float]:
    """Train the example for one seed; returns (test loss after each epoch, wall seconds)."""
    from torchvision import datasets, transforms

    started = time.perf_counter()
    torch.manual_seed(seed)
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    train_loader = torch.utils.data.DataLoader(
        datasets.FashionMNIST(
            str(root), train=True, download=False, transform=transforms.ToTensor()
        ),
        batch_size=batch_size,
        shuffle=True,
        **kwargs,
    )
    test_loader = torch.utils.data.DataLoader(
        datasets.FashionMNIST(
            str(root), train=False, download=False, transform=transforms.ToTensor()
        ),
        batch_size=batch_size,
        shuffle=False,
        **kwargs,
    )
    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _epoch in range(epochs):
        model.train()
        for data, _ in train_loader:
            data = data.to(device)
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            optimizer.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in test_loader:
                data = data.to(device)
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
        losses.append(test_loss / len(test_loader.dataset))
    return losses, time.perf_counter() - started


# --------------------------------------------------------------------------------------------------
# freebits, through its command line


def run_freebits(
    executable: str,
    out: Path,
    data_dir: Path,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float,
    device: str,
    adam_eps: float = 1e-8,
) -> tuple[dict[int, list[float]], float]:
    """`freebits sweep` with the example's settings; returns ({seed: test loss per epoch}, seconds)."""
    name = "reference-vae" if adam_eps == 1e-8 else "reference-vae-eps-matched"
    command = [
        executable,
        "sweep",
        "--out",
        str(out),
        "--name",
        name,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
        "--set",
        "model.hidden=[400]",
        "--latent-dim",
        "20",
        "--set",
        "model.activation=relu",
        "--set",
        "model.output_bias=default",  # nn.Linear's init, as the example (not Burda's data mean)
        "--set",
        f"train.adam_eps={adam_eps!r}",  # 1e-8: torch's default, as the example
        "--set",
        "train.lr_schedule=constant",
        "--set",
        f"train.batch_size={batch_size}",
        "--set",
        f"train.lr={lr}",
        "--lambdas",
        "0",
        "--anneal",
        "none",
        "--seeds",
        ",".join(str(s) for s in seeds),
        "--epochs",
        str(epochs),
        "--set",
        "dataset.binarize=none",
        "--set",
        "eval.iwae_samples=0",
        "--set",
        "eval.mi=false",
        "--device",
        device,
    ]
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"error: freebits sweep exited with {done.returncode}")
    per_seed: dict[int, list[float]] = {}
    for summary_path in sorted((out / name / "runs").glob("*/summary.json")):
        summary = json.loads(summary_path.read_text())
        seed = int(summary["seed"])
        curve = _epoch_curve(summary_path.parent / "metrics.csv")
        final = -float(summary["test_elbo"])
        if curve and not math.isclose(curve[-1], final, rel_tol=1e-9, abs_tol=1e-9):
            print(f"warning: seed {seed}: summary.json {final} != last metrics.csv row {curve[-1]}")
        per_seed[seed] = curve or [final]
    missing = set(seeds) - set(per_seed)
    if missing:
        raise SystemExit(f"error: no summary.json for seed(s) {sorted(missing)}")
    return per_seed, seconds


def _epoch_curve(path: Path) -> list[float]:
    import csv

    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["epoch"]))
    return [-float(r["test_elbo"]) for r in rows]


# --------------------------------------------------------------------------------------------------


def lockstep(
    data_dir: Path, steps: int, batch_size: int, lr: float, eps_values: Sequence[float]
) -> list[tuple[float, float, float]]:
    """Deterministic check of the update rule, no seed noise: the example's `VAE` (summed loss,
    Adam ε = 1e-8) and freebits' `PackedVAE` (K = 1, its per-example loss, Adam with each ε in
    `eps_values`) start from the same weights and see the same batches and the same noise.

    Returns (ε, max |Δ parameter| after the first step, after `steps` steps) for each ε. Adam is
    invariant to the loss scale except through ε, so the per-example loss (the sum divided by the
    batch size B) follows the summed loss exactly when ε is divided by B too.
    """
    import numpy as np

    from freebits_cli.data import find_idx, read_idx
    from freebits_cli.engine.objective import free_bits_kl, gaussian_kl_per_dim
    from freebits_cli.models import PackedVAE
    from freebits_cli.models.likelihoods import bernoulli_nll as reconstruction_nll

    train = find_idx(data_dir, "train")
    if train is None:
        raise SystemExit(f"error: no training images in {data_dir}")
    images = read_idx(train)[: steps * batch_size].reshape(-1, 784).astype(np.float32) / 255.0
    x_all = torch.from_numpy(images)
    out = []
    for eps in eps_values:
        torch.manual_seed(0)
        ref = VAE()
        packed = PackedVAE(1, 784, [400], 20, "relu")
        pairs = [  # (packed layer, reference weight (out, in), reference bias)
            (packed.encoder[0], ref.fc1.weight, ref.fc1.bias),
            (
                packed.to_stats,
                torch.cat([ref.fc21.weight, ref.fc22.weight]),
                torch.cat([ref.fc21.bias, ref.fc22.bias]),
            ),
            (packed.decoder[0], ref.fc3.weight, ref.fc3.bias),
            (packed.to_logits, ref.fc4.weight, ref.fc4.bias),
        ]
        with torch.no_grad():
            for layer, weight, bias in pairs:
                layer.weight[0].copy_(weight.T)
                layer.bias[0, 0].copy_(bias)
        opt_ref = torch.optim.Adam(ref.parameters(), lr=lr)
        opt_packed = torch.optim.Adam(packed.parameters(), lr=lr, eps=eps)
        noise = torch.Generator().manual_seed(1)
        first = 0.0
        for step in range(steps):
            x = x_all[step * batch_size : (step + 1) * batch_size]
            eps_z = torch.randn(x.shape[0], 20, generator=noise)
            mu, logvar = ref.encode(x)
            loss_ref = loss_function(
                ref.decode(mu + eps_z * torch.exp(0.5 * logvar)), x, mu, logvar
            )
            opt_ref.zero_grad()
            loss_ref.backward()
            opt_ref.step()
            mu_p, logvar_p = packed.encode(x[None])
            logits = packed.decode(mu_p + eps_z[None] * (0.5 * logvar_p).exp())
            kl = free_bits_kl(gaussian_kl_per_dim(mu_p, logvar_p), torch.zeros(1), "batch")
            loss_packed = reconstruction_nll(logits, x[None]).mean(-1) + kl  # per example, λ = 0
            opt_packed.zero_grad()
            loss_packed.sum().backward()
            opt_packed.step()
            with torch.no_grad():  # the pairs whose reference weight is a live parameter
                gap = max(
                    float((layer.weight[0] - weight.T).abs().max())
                    for layer, weight, _ in (pairs[0], pairs[2], pairs[3])
                )
            if step == 0:
                first = gap
        out.append((eps, first, gap))
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Train the pytorch/examples VAE (784-400-20, summed BCE, Adam 1e-3, batch 128) on "
            "Fashion-MNIST with freebits and with a plain reference loop; compare test losses."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per seed")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds (both sides)")
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA), help="raw IDX files")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        help="nats: a difference of means below this also counts as agreement",
    )
    parser.add_argument(
        "--freebits",
        default=str(Path(sys.executable).with_name("freebits")),
        help="the freebits executable",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep outputs here (default: temp)"
    )
    parser.add_argument("--skip-reference", action="store_true", help="run freebits only")
    parser.add_argument(
        "--lockstep-steps",
        type=int,
        default=200,
        help="steps of the deterministic same-weights/same-batches check (0: skip)",
    )
    parser.add_argument(
        "--eps-matched",
        action="store_true",
        help="also train freebits with Adam ε = 1e-8 / batch size (its loss is per example, the "
        "example's is summed over the batch; with ε scaled too the updates are identical)",
    )
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    device = torch.device(args.device)
    matched_eps = 1e-8 / args.batch_size

    with tempfile.TemporaryDirectory(prefix="freebits-refvae-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
        if args.lockstep_steps:
            print()
            print(
                f"Lockstep check: same initial weights, batches and noise, {args.lockstep_steps} "
                "steps; max |Δweight| between the example's VAE (summed loss, ε = 1e-8) and "
                "freebits' PackedVAE (per-example loss)"
            )
            print(f"{'freebits Adam ε':>16} {'after step 1':>13} {'after last':>11}")
            for eps, first, last in lockstep(
                args.data_dir, args.lockstep_steps, args.batch_size, args.lr, (1e-8, matched_eps)
            ):
                print(f"{eps:>16.3g} {first:>13.2e} {last:>11.2e}", flush=True)
            print()

        fb_curves, fb_seconds = run_freebits(
            args.freebits,
            work / "freebits",
            args.data_dir,
            seeds,
            args.epochs,
            args.batch_size,
            args.lr,
            args.device,
        )
        matched: dict[int, list[float]] = {}
        if args.eps_matched:
            matched, _ = run_freebits(
                args.freebits,
                work / "freebits",
                args.data_dir,
                seeds,
                args.epochs,
                args.batch_size,
                args.lr,
                args.device,
                adam_eps=matched_eps,
            )
        ref_curves: dict[int, list[float]] = {}
        ref_seconds = 0.0
        if not args.skip_reference:
            root = torchvision_root(args.data_dir, work / "torchvision")
            for seed in seeds:
                curve, seconds = train_reference(
                    seed, args.epochs, root, args.batch_size, args.lr, device
                )
                ref_curves[seed] = curve
                ref_seconds += seconds
                print(f"reference seed {seed}: {curve[-1]:.3f} ({seconds:.1f} s)", flush=True)

    print()
    print(f"Test loss (nats per example; BCE-sum + KL, one sampled z) after {args.epochs} epochs")
    print(f"{'seed':>6} {'reference':>11} {'freebits':>11} {'diff':>8}")
    for seed in seeds:
        ref = ref_curves.get(seed, [math.nan])[-1]
        fb = fb_curves[seed][-1]
        print(f"{seed:>6} {ref:>11.3f} {fb:>11.3f} {fb - ref:>+8.3f}")

    print()
    print(f"Mean ± sd over seeds per epoch (n = {len(seeds)})")
    print(f"{'epoch':>6} {'reference':>16} {'freebits':>16} {'diff':>8} {'2·SE':>6}")
    for epoch in range(args.epochs):
        ref_m, ref_s = mean_sd([c[epoch] for c in ref_curves.values()] or [math.nan])
        fb_m, fb_s = mean_sd([c[epoch] for c in fb_curves.values() if len(c) > epoch] or [math.nan])
        two_se = 2 * math.sqrt((ref_s**2 + fb_s**2) / len(seeds))
        line = (
            f"{epoch + 1:>6} {ref_m:>9.3f} ± {ref_s:<4.2f} {fb_m:>9.3f} ± {fb_s:<4.2f} "
            f"{fb_m - ref_m:>+8.3f} {two_se:>6.3f}"
        )
        if matched:
            m_m, m_s = mean_sd([c[epoch] for c in matched.values() if len(c) > epoch] or [math.nan])
            line += f" | ε-matched {m_m:>9.3f} ± {m_s:<4.2f} {m_m - ref_m:>+8.3f}"
        print(line)

    fb_mean, fb_sd = mean_sd([fb_curves[s][-1] for s in seeds])
    print()
    print(f"{'side':<10} {'mean':>9} {'sd':>7} {'wall s':>8}")
    if ref_curves:
        ref_mean, ref_sd = mean_sd([ref_curves[s][-1] for s in seeds])
        print(f"{'reference':<10} {ref_mean:>9.3f} {ref_sd:>7.3f} {ref_seconds:>8.1f}")
    print(f"{'freebits':<10} {fb_mean:>9.3f} {fb_sd:>7.3f} {fb_seconds:>8.1f}")
    if matched:
        m_mean, m_sd = mean_sd([matched[s][-1] for s in seeds])
        print(
            f"{'ε-matched':<10} {m_mean:>9.3f} {m_sd:>7.3f}   (freebits, Adam ε = {matched_eps:.3g})"
        )
    if not ref_curves:
        return 0
    n = len(seeds)
    noise = 2 * math.sqrt(ref_sd**2 / n + fb_sd**2 / n)
    diff = fb_mean - ref_mean
    agree = abs(diff) < max(noise, args.tolerance)
    print()
    print(
        f"difference of means (freebits - reference): {diff:+.3f} nats; "
        f"2·SE = {noise:.3f}; tolerance = {args.tolerance:.3f}"
    )
    print(f"agree within seed-to-seed noise: {'YES' if agree else 'NO'}")
    print(
        f"wall time ratio reference / freebits: {ref_seconds / fb_seconds:.2f}x "
        f"(reference: {n} seeds one after another with a DataLoader; freebits: one pack of {n}, "
        "including process start and data loading)"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
