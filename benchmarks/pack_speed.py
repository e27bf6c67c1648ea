"""What packing buys: wall time of the same sweep trained run by run and as one batched model.

What is measured, and why
-------------------------
freebits trains K runs of a sweep (differing in λ and seed) as ONE model whose weights carry a
leading K axis (`torch.baddbmm`), instead of K small models one after another. A small VAE leaves a
GPU idle and a CPU core waiting on Python, so batching should pay. This script measures how much,
against a plain reference loop measured in the same invocation, for K = 1, 4, 8, 16 runs:

* (a) **reference** — the usual code: one `nn.Module` VAE per run (same architecture, free-bits KL in
  `batch` mode, Adam), trained one run after another. The data sit on the device as one tensor and
  batches are index gathers (the fastest plain loop; a `DataLoader` would only be slower). After
  every epoch it computes the same test metrics freebits does (single-sample ELBO, KL per dimension,
  active-unit variances); it writes no files.
* (b) **freebits, `--pack-size 1`** — the library's executor, one run at a time through the packed
  trainer (K = 1 packs).
* (c) **freebits, packed** — the executor with one pack of K runs.

Both freebits modes go through `freebits_cli.executor.plan/prepare/execute`, so their times include
everything a real sweep does per epoch (CSV rows, the resume checkpoint of every run, the summary).
IWAE, mutual information and sample images are switched off (`eval.iwae_samples=0`, `eval.mi=false`,
`eval.samples=0`) so all three sides evaluate the same things. Data loading and process start are
outside the timed region on all sides.

Each side runs in its own long-lived worker subprocess (started and warmed up once: importing torch
and the first Adam step cost seconds that no side should be charged for). The three sides of one K
run back to back, so their ratios share the machine's state; with `--repeats N` each is measured N
times and the fastest kept (on a shared, noisy machine the minimum is the least disturbed figure).
Memory: the peak resident set size during the job, sampled every 20 ms, minus the RSS before it
("peak RSS Δ", roughly what the training itself holds: allocators keep memory between jobs, so the
absolute peak at the largest K, also printed, is the firmer figure); on CUDA
`torch.cuda.max_memory_allocated`. Workers use 1 torch thread by default (`--threads`): on a shared
CPU a second OpenMP thread that waits for a busy core makes small ops slower at random.
The script also checks that (b) and (c) give each run the same final test ELBO: freebits promises
that a run's numbers do not depend on the pack it trained in.

Datasets: `digits` (sklearn's 8×8 digits, 1,437 training images: per-step overhead weighs more) and
`fashion` (a subset of Fashion-MNIST from the raw IDX files, 784 pixels: arithmetic matters more).

Run: `.venv/bin/python benchmarks/pack_speed.py` (CPU defaults finish in a few minutes on 2 cores);
on a GPU box: `.venv/bin/python benchmarks/pack_speed.py --device cuda --ks 1,4,16,64`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SIDES = ("reference", "pack1", "packed")
LABELS = {
    "reference": "(a) reference loop",
    "pack1": "(b) freebits --pack-size 1",
    "packed": "(c) freebits packed",
}
LAMBDAS = (0.0, 0.25, 0.5, 1.0)
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


# --------------------------------------------------------------------------------------------------
# The sweep: K runs = |λ| × seeds


def grid_for(k: int) -> tuple[list[float], list[int]]:
    """λ values and seeds whose Cartesian product has exactly k runs (λ first, up to 4 of them)."""
    n_lambda = math.gcd(k, len(LAMBDAS))
    return list(LAMBDAS[:n_lambda]), list(range(k // n_lambda))


def overrides(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """The freebits spec of a job, as `--set` style (path, value) pairs."""
    lambdas, seeds = grid_for(job["k"])
    return [
        ("name", f"bench-{job['side']}-k{job['k']}"),
        ("dataset.name", job["dataset_name"]),
        ("dataset.binarize", "none"),
        ("model.hidden", job["hidden"]),
        ("model.latent_dim", job["latent_dim"]),
        ("model.activation", "relu"),
        ("train.epochs", job["epochs"]),
        ("train.batch_size", job["batch_size"]),
        ("train.lr", 1e-3),
        ("train.device", job["device"]),
        ("free_bits.mode", "batch"),
        ("anneal.schedule", "none"),
        ("eval.iwae_samples", 0),
        ("eval.mi", False),
        ("eval.samples", 0),
        ("grid.lambda", lambdas),
        ("grid.seed", seeds),
    ]


# --------------------------------------------------------------------------------------------------
# (a) the plain reference loop


def plain_vae(input_dim: int, hidden: Sequence[int], latent_dim: int) -> Any:
    """The usual `nn.Module` VAE with freebits' architecture (encoder mirrored by the decoder)."""
    import torch
    from torch import nn

    class PlainVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            enc: list[nn.Module] = []
            for a, b in itertools.pairwise([input_dim, *hidden]):
                enc += [nn.Linear(a, b), nn.ReLU()]
            self.encoder = nn.Sequential(*enc)
            self.to_stats = nn.Linear(hidden[-1], 2 * latent_dim)
            back = [latent_dim, *reversed(hidden)]
            dec: list[nn.Module] = []
            for a, b in itertools.pairwise(back):
                dec += [nn.Linear(a, b), nn.ReLU()]
            self.decoder = nn.Sequential(*dec)
            self.to_logits = nn.Linear(back[-1], input_dim)

        def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=-1)
            return mu, logvar

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return self.to_logits(self.decoder(z))

    return PlainVAE()


def train_plain(run: Any, x_train: Any, x_test: Any) -> float:
    """Train one run the usual way; returns its final single-sample test ELBO (nats per example)."""
    import torch
    from torch.nn import functional as F

    device = x_train.device
    torch.manual_seed(run.train.seed)
    model = plain_vae(x_train.shape[1], run.model.hidden, run.model.latent_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.train.lr)
    lam, size, n = run.free_bits.lam, run.train.batch_size, x_train.shape[0]
    elbo = math.nan
    for _epoch in range(run.train.epochs):
        model.train()
        order = torch.randperm(n, device=device)
        for start in range(0, n, size):
            x = x_train[order[start : start + size]]
            mu, logvar = model.encode(x)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            recon = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="none")
            kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())  # (B, D)
            free_bits = torch.clamp(kl.mean(0), min=lam).sum()  # Kingma et al. 2016
            loss = recon.sum(-1).mean() + free_bits
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():  # what freebits evaluates each epoch: ELBO, KL per dim, AU variance
            recon_sum, kl_sum, means = 0.0, 0.0, []
            for chunk in x_test.split(2048):
                mu, logvar = model.encode(chunk)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                logits = model.decode(z)
                recon_sum += float(
                    F.binary_cross_entropy_with_logits(logits, chunk, reduction="sum")
                )
                kl_dim = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(0)
                kl_sum += float(kl_dim.sum())
                means.append(mu)
            torch.cat(means).double().var(dim=0).tolist()
            elbo = -(recon_sum + kl_sum) / x_test.shape[0]
    return elbo


# --------------------------------------------------------------------------------------------------
# measurements: one long-lived worker process per side, fed jobs one at a time


def _warm_up(device: Any) -> None:
    """First calls pay for thread pools, CUDA context, kernels and lazy imports (the first Adam step
    imports torch._dynamo: over a second); keep all that out of the timed region of every side."""
    import torch
    from torch.nn import functional as F

    x = torch.randn(4, 64, 32, device=device)
    w = torch.randn(4, 32, 16, device=device, requires_grad=True)
    lin = torch.nn.Linear(32, 16).to(device)
    optimizer = torch.optim.Adam([w, *lin.parameters()], lr=1e-3)
    for _ in range(2):
        packed = torch.baddbmm(torch.zeros(4, 1, 16, device=device), x, w)
        logits = packed + lin(x[torch.randperm(4, device=device)])
        loss = F.binary_cross_entropy_with_logits(logits, torch.rand_like(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    """Current resident set size (Linux /proc); falls back to the peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """Samples this process's RSS every `interval` s in a thread: the peak of one job, not of the
    process's whole life (ru_maxrss only ever grows, and a worker serves many jobs)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _build_spec(items: list[tuple[str, Any]]) -> Any:
    try:  # the module that holds build_spec moved once; accept either place
        from freebits_cli.spec_file import build_spec
    except ImportError:  # pragma: no cover
        from freebits_cli.spec import build_spec  # type: ignore[attr-defined,no-redef]
    return build_spec(None, items)


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Train one side of one K in this process; returns seconds, memory and each run's test ELBO."""
    import torch

    from freebits_cli import executor
    from freebits_cli.data import load_dataset

    device = torch.device(job["device"])
    spec = _build_spec(overrides(job))
    runs = sorted(spec.expand(), key=lambda r: r.run_id)
    if job["side"] == "reference":
        data = load_dataset(spec.dataset)
        x_train = torch.from_numpy(data.x_train).to(device)
        x_test = torch.from_numpy(data.x_test).to(device)
    else:
        plan = executor.plan(spec, Path(job["out"]), force=True)
        # Load the data into the executor's cache now, so the timed region trains only (as (a));
        # the untimed warm-up job of each dataset does the same through `execute` itself.
        cached_loader = getattr(executor, "_dataset", None)
        if cached_loader is not None:
            cached_loader(spec.dataset)
        executor.prepare(plan, spec)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    with PeakRSS() as memory:
        started = time.perf_counter()
        if job["side"] == "reference":
            elbos = {run.run_id: train_plain(run, x_train, x_test) for run in runs}
        else:
            pack_size = 1 if job["side"] == "pack1" else job["k"]
            outcomes = executor.execute(plan, job["device"], pack_size=pack_size)
            failed = [o for o in outcomes if o.state != "done"]
            if failed:
                raise RuntimeError(f"{len(failed)} run(s) failed, e.g. {failed[0].reason}")
            elbos = {o.run_id: float(o.summary["test_elbo"]) for o in outcomes if o.summary}
        _sync(device)
        seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "rss_mb": memory.peak,
        "rss_delta_mb": memory.peak - memory.start,
        "elbo": elbos,
        "runs": len(runs),
    }
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if job["side"] != "reference":
        shutil.rmtree(job["out"], ignore_errors=True)
    return result


RESULT = "RESULT "


def worker_loop(device: str, threads: int) -> None:
    """Serve jobs: one JSON line in on stdin, one `RESULT {json}` line out on stdout."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    _warm_up(torch.device(device))
    print(RESULT + json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(RESULT + json.dumps(measure(json.loads(line))), flush=True)


class Worker:
    """A long-lived `--worker` subprocess (one per side, so each side pays its start-up once)."""

    def __init__(self, device: str, threads: int) -> None:
        command = [sys.executable, __file__, "--worker", device, "--threads", str(threads)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.hello = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(RESULT):
                return json.loads(line[len(RESULT) :])
        raise SystemExit(
            f"error: a worker exited with {self.process.wait()} (see its stderr above)"
        )

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait()


# --------------------------------------------------------------------------------------------------
# data sets and the table


def fashion_subset(data_dir: Path, n_train: int, n_test: int, folder: Path) -> str:
    """Write the first n_train / n_test Fashion-MNIST images as a freebits `.npz` (uint8)."""
    import numpy as np

    from freebits_cli.data import find_idx, read_idx

    train, test = find_idx(data_dir, "train"), find_idx(data_dir, "test")
    if train is None or test is None:
        raise SystemExit(f"error: no Fashion-MNIST IDX files in {data_dir}")
    path = folder / f"fashion-{n_train}-{n_test}.npz"
    np.savez(path, x_train=read_idx(train)[:n_train], x_test=read_idx(test)[:n_test])
    return str(path)


def print_table(dataset: str, rows: list[dict[str, Any]], device: str) -> None:
    mem_key = "cuda_peak_mb" if device.startswith("cuda") else "rss_delta_mb"
    mem_name = "CUDA peak MB" if device.startswith("cuda") else "peak RSS Δ MB"
    print()
    print(f"== {dataset}: wall seconds of the whole sweep (fastest of repeats), speed-up vs (a) ==")
    header = (
        f"{'K':>3} | {'(a) ref':>8} {'(b) pack1':>9} {'(c) packed':>10} | "
        f"{'a/b':>5} {'a/c':>6} {'b/c':>6} | {'(c) s/run':>9} | "
        f"{mem_name + ' a/b/c':>24} | {'max|Δelbo| b-c':>14}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        t = {side: row[side]["seconds"] for side in SIDES}
        mem = "/".join(f"{row[side].get(mem_key, math.nan):.0f}" for side in SIDES)
        b, c = row["pack1"]["elbo"], row["packed"]["elbo"]
        delta = max(abs(b[r] - c[r]) for r in b) if b.keys() == c.keys() else math.nan
        print(
            f"{row['k']:>3} | {t['reference']:>8.2f} {t['pack1']:>9.2f} {t['packed']:>10.2f} | "
            f"{t['reference'] / t['pack1']:>5.2f} {t['reference'] / t['packed']:>6.2f} "
            f"{t['pack1'] / t['packed']:>6.2f} | {t['packed'] / row['k']:>9.3f} | "
            f"{mem:>24} | {delta:>14.2e}"
        )
    peak = "/".join(f"{rows[-1][side]['rss_mb']:.0f}" for side in SIDES)
    print(f"(absolute peak RSS MB a/b/c at K={rows[-1]['k']}, incl. torch itself: {peak})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Time the same sweep of K VAE runs trained (a) by a plain one-model-per-run loop, "
            "(b) by freebits one run at a time, (c) by freebits as one batched pack."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--datasets", default="digits,fashion", help="digits and/or fashion")
    parser.add_argument("--ks", default="1,4,8,16", help="sweep sizes K (runs differ in λ/seed)")
    parser.add_argument("--epochs-digits", type=int, default=10)
    parser.add_argument("--epochs-fashion", type=int, default=2)
    parser.add_argument("--fashion-train", type=int, default=5_000, help="training images used")
    parser.add_argument("--fashion-test", type=int, default=1_000, help="test images used")
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA), help="raw IDX files")
    parser.add_argument("--hidden", default="256,128", help="encoder widths (decoder mirrors)")
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--repeats", type=int, default=1, help="measure each (K, side) this often; keep the fastest"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=(
            "torch CPU threads per worker (0: torch's default). 1 by default: on a shared machine "
            "a second OpenMP thread waiting for a busy core makes small ops 10x slower at random"
        ),
    )
    parser.add_argument("--worker", default=None, metavar="DEVICE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_loop(args.worker, args.threads)
        return 0

    ks = [int(k) for k in args.ks.split(",")]
    hidden = [int(h) for h in args.hidden.split(",")]
    workers = {side: Worker(args.device, args.threads) for side in SIDES}
    threads = workers["reference"].hello["threads"]
    print(f"{threads} torch threads per worker; device {args.device}; one worker process per side")
    try:
        with tempfile.TemporaryDirectory(prefix="freebits-packspeed-") as tmp:
            scratch = Path(tmp)
            for dataset in args.datasets.split(","):
                if dataset == "digits":
                    name, epochs = "digits", args.epochs_digits
                elif dataset == "fashion":
                    name = fashion_subset(
                        args.data_dir, args.fashion_train, args.fashion_test, scratch
                    )
                    epochs = args.epochs_fashion
                else:
                    raise SystemExit(f"error: unknown dataset {dataset!r} (digits or fashion)")
                print(
                    f"\n{dataset}: hidden {hidden}, latent {args.latent_dim}, "
                    f"batch {args.batch_size}, {epochs} epochs, λ ∈ {list(LAMBDAS)} × seeds",
                    flush=True,
                )
                base = {
                    "dataset_name": name,
                    "hidden": hidden,
                    "latent_dim": args.latent_dim,
                    "batch_size": args.batch_size,
                    "device": args.device,
                }
                for side in SIDES:  # untimed: first-call costs (lazy imports, data cache, files)
                    out = str(scratch / f"{dataset}-{side}-warmup")
                    workers[side].run({**base, "side": side, "k": 1, "epochs": 1, "out": out})
                rows = []
                for k in ks:
                    samples: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
                    for repeat in range(args.repeats):
                        for side in SIDES:
                            job = {
                                **base,
                                "side": side,
                                "k": k,
                                "epochs": epochs,
                                "out": str(scratch / f"{dataset}-{side}-k{k}-r{repeat}"),
                            }
                            result = workers[side].run(job)
                            samples[side].append(result)
                            print(
                                f"  K={k:<3} {LABELS[side]:<28} {result['seconds']:8.2f} s",
                                flush=True,
                            )
                    row: dict[str, Any] = {"k": k}
                    for side in SIDES:
                        row[side] = min(samples[side], key=lambda r: r["seconds"])
                    rows.append(row)
                print_table(dataset, rows, args.device)
    finally:
        for process in workers.values():
            process.close()
    print()
    print(
        "a/b, a/c: speed-up of freebits over the plain loop (>1: freebits faster); "
        "b/c: what packing buys inside freebits."
    )
    print(
        "max|Δelbo| b-c: largest difference of a run's final test ELBO between (b) and (c) "
        "(freebits promises pack-independent numbers)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
