"""The benchmark sweep written the usual way: one `nn.Module` VAE per run, one run after another.

This is what `speed.py` measures freebits against (ways (c) and (d)); it also runs on its own:

    python benchmarks/plain_loop.py --root ROOT --loader torchvision --seeds 0

ROOT is a torchvision root (ROOT/FashionMNIST/raw/<uncompressed IDX files>). Each run trains an MLP
VAE (784-512-256-32 and back, ReLU) with the objective freebits trains: Bernoulli likelihood of the
grayscale pixels (`binary_cross_entropy_with_logits`, summed over pixels, mean over the batch) plus
β(t) times the batch free-bits KL Σ_j max(λ, mean_b KL_bj) (Kingma et al. 2016; no clamp at λ = 0),
β(t) = 1 or a linear warm-up from 0 over 10 epochs (Bowman et al. 2016; freebits' defaults), Adam at
1e-3, batch 128, and after every epoch the single-sample test ELBO. Runs: λ × schedule × seed.

Two data paths:
* `torchvision`: `datasets.FashionMNIST` + `transforms.ToTensor()` + `DataLoader(shuffle=True)`
  (pytorch/examples' `num_workers=1, pin_memory=True` on CUDA), batches moved to the device;
* `tensor`: the images as one float tensor on the device, batches gathered by a random permutation
  (the fastest plain loop: no DataLoader, no per-image transforms).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

HIDDEN = (512, 256)
LATENT = 32
BATCH = 128
WARMUP_EPOCHS = 10  # freebits' anneal.warmup_epochs default
TEST_BATCH = 1000


class VAE(nn.Module):
    """Gaussian encoder, N(0, I) prior, Bernoulli decoder returning logits."""

    def __init__(self, input_dim: int = 784, hidden: Sequence[int] = HIDDEN, latent: int = LATENT):
        super().__init__()
        widths = [input_dim, *hidden]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Linear(widths[-1], 2 * latent))
        back = [latent, *reversed(hidden)]
        dec: list[nn.Module] = []
        for a, b in itertools.pairwise(back):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.decoder = nn.Sequential(*dec, nn.Linear(back[-1], input_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation
        return self.decoder(z), mu, logvar


def losses(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example reconstruction NLL (B,) and KL per example and dimension (B, D)."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())  # Kingma & Welling 2014, App. B
    return recon, kl


def batches_torchvision(dataset: object, device: torch.device, shuffle: bool) -> Iterable:
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    size = BATCH if shuffle else TEST_BATCH
    loader = torch.utils.data.DataLoader(dataset, batch_size=size, shuffle=shuffle, **kwargs)
    return ((x.view(x.shape[0], -1).to(device), None) for x, _ in loader)


def batches_tensor(data: torch.Tensor, shuffle: bool) -> Iterator:
    if not shuffle:
        yield from ((x, None) for x in data.split(TEST_BATCH))
        return
    order = torch.randperm(data.shape[0], device=data.device)
    for start in range(0, data.shape[0], BATCH):
        yield data[order[start : start + BATCH]], None


def train_run(lam: float, anneal: str, seed: int, epochs: int, data: dict, device) -> float:
    """Train one run; returns its final single-sample test ELBO (nats per example)."""
    torch.manual_seed(seed)
    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_per_epoch = -(-data["n_train"] // BATCH)
    step, elbo = 0, float("nan")
    for _epoch in range(epochs):
        model.train()
        for x, _ in data["train"]():
            beta = 1.0 if anneal == "none" else min(1.0, step / (WARMUP_EPOCHS * steps_per_epoch))
            logits, mu, logvar = model(x)
            recon, kl = losses(logits, x, mu, logvar)
            kl_dim = kl.mean(0)
            free_bits = (torch.clamp(kl_dim, min=lam) if lam > 0 else kl_dim).sum()
            loss = recon.mean() + beta * free_bits
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        model.eval()
        total = 0.0
        with torch.no_grad():
            for x, _ in data["test"]():
                logits, mu, logvar = model(x)
                recon, kl = losses(logits, x, mu, logvar)
                total += float((recon + kl.sum(-1)).sum())
        elbo = -total / data["n_test"]
    return elbo


def load(loader: str, root: str, n_train: int, n_test: int, device: torch.device) -> dict:
    """Batch iterators over the first n_train / n_test images (0: all) by the chosen data path."""
    from torchvision import datasets, transforms

    train = datasets.FashionMNIST(root, train=True, download=False, transform=transforms.ToTensor())
    test = datasets.FashionMNIST(root, train=False, download=False, transform=transforms.ToTensor())
    n_train, n_test = n_train or len(train), n_test or len(test)
    if loader == "torchvision":
        train = torch.utils.data.Subset(train, range(n_train)) if n_train < len(train) else train
        test = torch.utils.data.Subset(test, range(n_test)) if n_test < len(test) else test
        return {
            "train": lambda: batches_torchvision(train, device, shuffle=True),
            "test": lambda: batches_torchvision(test, device, shuffle=False),
            "n_train": n_train,
            "n_test": n_test,
        }
    # The same pixels as ToTensor gives (uint8 / 255), as one (N, 784) tensor on the device.
    x_train = (train.data[:n_train].reshape(n_train, -1).float() / 255).to(device)
    x_test = (test.data[:n_test].reshape(n_test, -1).float() / 255).to(device)
    return {
        "train": lambda: batches_tensor(x_train, shuffle=True),
        "test": lambda: batches_tensor(x_test, shuffle=False),
        "n_train": n_train,
        "n_test": n_test,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="torchvision root (FashionMNIST/raw inside)")
    parser.add_argument("--loader", choices=("torchvision", "tensor"), default="torchvision")
    parser.add_argument("--lambdas", default="0,0.1,0.5,1,2")
    parser.add_argument("--anneal", default="none,linear")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-train", type=int, default=0, help="first N training images (0: all)")
    parser.add_argument("--n-test", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--result", default=None, help="write final test ELBOs etc. as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    data = load(args.loader, args.root, args.n_train, args.n_test, device)
    started = time.perf_counter()
    elbos = {}
    for lam in [float(v) for v in args.lambdas.split(",")]:
        for anneal in args.anneal.split(","):
            for seed in [int(v) for v in args.seeds.split(",")]:
                elbos[f"lam{lam:g}-{anneal}-s{seed}"] = train_run(
                    lam, anneal, seed, args.epochs, data, device
                )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result = {
        "train_seconds": time.perf_counter() - started,
        "test_elbo": elbos,
        "threads": torch.get_num_threads(),
        "n_train": data["n_train"],
        "n_test": data["n_test"],
    }
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    if args.result:
        with open(args.result, "w") as handle:
            json.dump(result, handle)
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
