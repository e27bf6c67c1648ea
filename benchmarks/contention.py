"""Beside other work: freebits sweeps against plain PyTorch loops, on a quiet CPU and on a shared one.

Conditions (each measured in this one invocation, one after another):
  quiet   nothing started beside the measured process (on a shared machine, what else runs)
  sweep   beside a second freebits sweep of the same shape, into another folder, restarted
          whenever it ends, so it trains for the whole measurement
  torch   beside a 2-thread PyTorch job: a small MLP's training steps on random data, forever,
          with `torch.set_num_threads(2)` and OpenMP's default wait policy (a typical neighbour)
Ways, in each condition, each one whole process (start, imports, data, training, evaluation):
  images  freebits' default (it chooses workers × threads itself), freebits `--jobs 1` (one
          process on every core: the choice before), and the tensor loop (`plain_loop.py
          --loader tensor`) — the speed benchmark's sweep: Fashion-MNIST, MLP 784-512-256-32,
          λ ∈ {0, 0.1, 0.5, 1, 2} × anneal {none, linear}, one epoch, IWAE off
  text    the same three for 4 LSTM text runs (λ ∈ {0, 0.25, 0.5, 1}, `text_speed.py`'s shape,
          the fortunes corpus), the plain loop being `plain_text_loop.py`
Printed per way: wall seconds, the plain loop's seconds over the way's (above 1: faster than the
plain loop), the way's seconds over its quiet seconds, freebits' choice (its plan line), the
worker start-up freebits measured, the peak memory. The freebits processes of a condition share a
registry of trainers in a scratch folder, so the measured sweep sees the background one.

Run: PYTHONPATH=. python benchmarks/contention.py [--quick] [--only images|text]
     [--conditions quiet,sweep,torch] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from speed import (
    ANNEAL,
    LAMBDAS,
    cpu_model,
    default_data_dir,
    find_idx,
    plan_choice,
    read_idx,
    run_child,
    torchvision_root,
    write_npz,
)
from speed_report import HIDDEN, LATENT
from text_speed import sweep_args as text_sweep_args

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONDITIONS = ("quiet", "sweep", "torch")
TEXT_LAMBDAS = "0,0.25,0.5,1"
#: Seconds the background gets to start training before a way is measured beside it.
SETTLE_S = 3.0


def child_torch_job() -> int:
    """The 2-thread PyTorch neighbour: an MLP's training steps on random data until killed."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 784)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(128, 784)
    while True:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# ------------------------------------------------------------------------------------------------
# Backgrounds


@contextmanager
def background(kind: str, command: list[str], env: dict[str, str], scratch: Path) -> Iterator[None]:
    """Keep `kind` running beside the block: nothing (quiet), `command` restarted as it ends
    (sweep, each time into a new folder), or the PyTorch job."""
    if kind == "quiet":
        yield
        return
    stop = threading.Event()
    current: list[subprocess.Popen[bytes]] = []
    if kind == "torch":
        job_env = {k: v for k, v in env.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        commands = iter(lambda: [sys.executable, __file__, "--child-torch-job"], None)
    else:
        job_env = env
        commands = ([*command, "--out", str(scratch / f"background-{i}")] for i in range(10**6))

    def loop() -> None:
        while not stop.is_set():
            proc = subprocess.Popen(
                next(commands), env=job_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            current[:] = [proc]
            while proc.poll() is None and not stop.is_set():
                time.sleep(0.2)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    if kind == "sweep":
        wait_for_trainer(scratch)
    time.sleep(SETTLE_S)
    try:
        yield
    finally:
        stop.set()
        for proc in current:
            proc.terminate()
            proc.wait()
        thread.join()


def wait_for_trainer(scratch: Path, limit_s: float = 300.0) -> None:
    """Until the background sweep is in the registry (it registers when it starts training)."""
    from freebits_cli.sweep import trainers

    started = time.perf_counter()
    while not trainers.others() and time.perf_counter() - started < limit_s:
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------------
# Ways


def freebits_command(args: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "freebits_cli", *args, "--device", "cpu", "--out", str(out)]


def image_ways(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The image ways' commands (without --out for freebits) and the background sweep's."""
    tv_root = torchvision_root(args.data_dir, scratch)
    if args.n_train or args.n_test:
        n_train = args.n_train or len(
            read_idx(tv_root / "FashionMNIST/raw/train-images-idx3-ubyte")
        )
        n_test = args.n_test or len(read_idx(tv_root / "FashionMNIST/raw/t10k-images-idx3-ubyte"))
        npz = scratch / "subset.npz"
        write_npz(args.data_dir, npz, n_train, n_test)
        data = ["--dataset", str(npz)]
    else:
        data = ["--dataset", "fashion-mnist", "--data-dir", str(args.data_dir)]
    sweep = ["sweep", *data, "--set", f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]"]
    sweep += ["--latent-dim", str(LATENT), "--lambdas", LAMBDAS, "--anneal", ANNEAL]
    sweep += ["--epochs", "1", "--set", "eval.iwae_samples=0"]
    plain = [sys.executable, str(HERE / "plain_loop.py"), "--root", str(tv_root)]
    plain += ["--lambdas", LAMBDAS, "--anneal", ANNEAL, "--loader", "tensor", "--epochs", "1"]
    plain += ["--n-train", str(args.n_train), "--n-test", str(args.n_test)]
    return {"freebits": sweep, "freebits --jobs 1": [*sweep, "--jobs", "1"], "plain": plain}, sweep


def text_ways(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, list[str]], list[str]]:
    corpus = scratch / "fortunes"
    subprocess.run([sys.executable, str(HERE / "fortunes_corpus.py"), str(corpus)],
                   check=True, capture_output=True)  # fmt: skip
    sweep = text_sweep_args(corpus, TEXT_LAMBDAS, args.text_size)
    plain = [sys.executable, str(HERE / "plain_text_loop.py"), "--corpus", str(corpus)]
    plain += ["--lambdas", TEXT_LAMBDAS, "--train-size", str(args.text_size)]
    if args.text_test_size:  # the first N test sentences on both sides
        sweep += ["--set", f"dataset.test_size={args.text_test_size}"]
        plain += ["--test-size", str(args.text_test_size)]
    return {"freebits": sweep, "freebits --jobs 1": [*sweep, "--jobs", "1"], "plain": plain}, sweep


def measure(
    way: str, command: list[str], scratch: Path, env: dict[str, str], tag: str
) -> dict[str, Any]:
    from freebits_cli.sweep import trainers

    is_freebits = way.startswith("freebits")
    if is_freebits:
        command = freebits_command(command, scratch / f"out-{tag}")
    before = trainers.startup()
    log = scratch / f"{tag}.log"
    seconds, rss = run_child(command, log, env)
    result: dict[str, Any] = {"seconds": seconds, "rss_mb": rss, "load": os.getloadavg()[0]}
    if is_freebits:
        result["choice"] = plan_choice(log)
        after = trainers.startup()
        result["startup_s"] = after if after != before else None  # measured by this run
    return result


# ------------------------------------------------------------------------------------------------
# The table


def table(name: str, figures: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Markdown rows: condition, way, seconds, × plain loop, × quiet, choice, start-up, memory."""
    rows = [
        f"| {name}: condition | way | seconds | plain loop ÷ way | way ÷ its quiet time | "
        "choice (plan line) | worker start-up | peak RSS | load |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for condition, ways in figures.items():
        plain = ways.get("plain", {}).get("seconds")
        for way, r in ways.items():
            quiet = figures.get("quiet", {}).get(way, {}).get("seconds")
            vs_plain = f"{plain / r['seconds']:.2f}×" if plain else "–"
            vs_quiet = f"{r['seconds'] / quiet:.2f}×" if quiet else "–"
            startup = f"{r['startup_s']:.1f} s" if r.get("startup_s") else "–"
            rows.append(
                f"| {condition} | {way} | {r['seconds']:.1f} | {vs_plain} | {vs_quiet} | "
                f"{r.get('choice', '–')} | {startup} | {r['rss_mb']:.0f} MB | {r['load']:.1f} |"
            )
    return rows


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="reduced sizes: 4,000 / 1,000 images, 300 / 300 sentences")  # fmt: skip
    parser.add_argument("--only", choices=("images", "text"), default=None)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--n-train", type=int, default=0, help="first N training images (0: all)")
    parser.add_argument("--n-test", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--text-size", type=int, default=0, help="training sentences (3000)")
    parser.add_argument("--text-test-size", type=int, default=0, help="test sentences (0: all)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test = args.n_train or 4000, args.n_test or 1000
    args.text_size = args.text_size or (300 if args.quick else 3000)
    args.text_test_size = args.text_test_size or (300 if args.quick else 0)
    args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if unknown := set(args.conditions) - set(CONDITIONS):
        parser.error(f"--conditions: unknown {sorted(unknown)} ({', '.join(CONDITIONS)})")
    args.data_dir = args.data_dir or default_data_dir()
    if find_idx(args.data_dir, "train-images-idx3-ubyte") is None and args.only != "text":
        parser.error(f"--data-dir {args.data_dir}: no Fashion-MNIST IDX files")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-torch-job"]:
        return child_torch_job()
    args = parse_args(argv)
    figures: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "args": argv}
    with tempfile.TemporaryDirectory(prefix="freebits-contention-") as tmp:
        scratch = Path(tmp)
        (scratch / "runtime").mkdir()
        os.environ["XDG_RUNTIME_DIR"] = str(scratch / "runtime")  # the registry of this run
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
        suites = {"images": image_ways, "text": text_ways}
        for name, make in suites.items():
            if args.only not in (None, name):
                continue
            ways, background_sweep = make(args, scratch)
            results: dict[str, dict[str, Any]] = {}
            for condition in args.conditions:
                results[condition] = {}
                beside = freebits_command(background_sweep, scratch)[:-2]  # its --out per start
                with background(condition, beside, env, scratch):
                    for way, command in ways.items():
                        tag = f"{name}-{condition}-{way.replace(' ', '')}"
                        print(f"{name:6} {condition:6} {way:18} ...", end=" ", flush=True)
                        r = measure(way, command, scratch, env, tag)
                        results[condition][way] = r
                        print(f"{r['seconds']:7.1f} s  {r.get('choice', '')}", flush=True)
            figures[name] = results
    lines = [
        f"CPU: {figures['cpu']}, {figures['cores']} cores; command: contention.py {' '.join(argv)}"
    ]
    for name in suites:
        if name in figures:
            lines += ["", *table(name, figures[name])]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
