"""Text VAEs: what packing costs or saves, measured side by side in ONE invocation.

1. Sweeps: the same 4 text runs (λ ∈ {0, 0.25, 0.5, 1}, fortunes corpus or `--data-dir`, a
   `--train-size` subset, one epoch, IWAE and MI off) trained as one pack and with `--pack-size 1`,
   alternating, each in its own subprocess; seconds per run-epoch, whole process.
2. The recurrence: K LSTM layers, forward and backward over a batch, as freebits' batched
   recurrence (one `baddbmm` per step over stacked weights: the CUDA path) against a loop of K
   calls of torch's own LSTM (cuDNN on a GPU; what a CPU pack runs member by member).

Run: PYTHONPATH=. python3 benchmarks/text_speed.py [--device cuda] [--data-dir CORPUS]
     [--recurrence-only] [--markdown FILE]  (`make gpu-check` runs the recurrence table)
(with no --data-dir it writes the fortunes corpus: apt install fortunes.)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freebits_cli.models.lstm import PackedLSTM  # noqa: E402

#: The benchmark's text runs beside λ: a small LSTM VAE, IWAE, MI and samples off (also what
#: contention.py trains, beside plain_text_loop.py's loop of the same shape).
SWEEP_SETTINGS = (
    "dataset.max_vocab=10000",
    "model.embedding_dim=128",
    "model.hidden=[128]",
    "model.latent_dim=16",
    "model.dropout=0.3",
    "train.batch_size=64",
    "eval.iwae_samples=0",
    "eval.mi=false",
    "eval.samples=0",
)


def sweep_args(corpus: Path, lambdas: str, train_size: int) -> list[str]:
    """`freebits sweep` arguments of the benchmark's text sweep (one epoch)."""
    args = ["sweep", "--dataset", "text", "--data-dir", str(corpus), "--lambdas", lambdas]
    args += ["--epochs", "1", "--set", f"dataset.train_size={train_size}"]
    for setting in SWEEP_SETTINGS:
        args += ["--set", setting]
    return args


def sweep_seconds(corpus: Path, device: str, train_size: int, pack_size: int, out: Path) -> float:
    args = [sys.executable, "-m", "freebits_cli", *sweep_args(corpus, "0,0.25,0.5,1", train_size)]
    args += ["--device", device, "--pack-size", str(pack_size), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"sweep failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return (time.perf_counter() - started) / 4  # four runs, one epoch each


def recurrence_ms(members: int, device: str, batched: bool, repeats: int = 5) -> float:
    dev = torch.device(device)
    layer = PackedLSTM(members, 128, 256).to(dev)
    layer.reset([torch.Generator(device=dev).manual_seed(k) for k in range(members)], 0.1)
    x = torch.randn(members, 64, 20, 128, device=dev, requires_grad=True)
    zeros = torch.zeros(1, 64, 256, device=dev)

    def once() -> None:
        if batched:
            out = layer.recurrence(x, (zeros.expand(members, -1, -1),) * 2)
        else:
            out = torch.cat([layer._native(x[k : k + 1], (zeros, zeros)) for k in range(members)])
        out.sum().backward()

    once()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--recurrence-only", action="store_true", help="skip the sweeps")
    parser.add_argument("--markdown", type=Path, help="also write the recurrence table here")
    args = parser.parse_args()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu
    print(
        f"device: {args.device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    if not args.recurrence_only:
        compare_sweeps(args)
    recurrence_table(args.device, args.markdown)


def compare_sweeps(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.data_dir
        if corpus is None:
            corpus = Path(tmp) / "fortunes"
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fortunes_corpus.py"), str(corpus)],
                           check=True, capture_output=True)  # fmt: skip
        times: dict[str, list[float]] = {"packed": [], "pack1": []}
        for i in range(args.repeats):
            for mode, size in (("packed", 0), ("pack1", 1)):
                out = Path(tmp) / f"{mode}{i}"
                times[mode].append(sweep_seconds(corpus, args.device, args.train_size, size, out))
        print(f"sweep, seconds per run-epoch ({args.train_size} sentences, 4 runs, whole process):")
        for mode, values in times.items():
            print(
                f"  {mode:7s} "
                + "  ".join(f"{v:.2f}" for v in values)
                + f"   best {min(values):.2f}"
            )
        print(f"  pack1 / packed (best of each): {min(times['pack1']) / min(times['packed']):.2f}")


def recurrence_table(device: str, markdown: Path | None) -> None:
    """The batched recurrence against K calls of torch's LSTM (cuDNN on a GPU), for several K."""
    print("recurrence, forward + backward, batch 64 × 20 tokens, 128 -> 256 (ms):")
    print("  K   batched   K native calls   native / batched")
    rows = [
        "| K | batched recurrence (ms) | K torch LSTM calls (ms) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for k in (1, 4, 16, 64) if device.startswith("cuda") else (1, 4, 16):
        batched = recurrence_ms(k, device, True)
        native = recurrence_ms(k, device, False)
        print(f"  {k:<3d} {batched:8.1f}  {native:15.1f}   {native / batched:6.2f}")
        rows.append(f"| {k} | {batched:.1f} | {native:.1f} | {native / batched:.2f}× |")
    if markdown is not None:
        markdown.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
