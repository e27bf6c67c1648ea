"""How fast is a freebits sweep, against plain PyTorch loops, measured side by side in ONE invocation.

The benchmark sweep: Fashion-MNIST, MLP VAE 784-512-256-32 (decoder mirrored, ReLU), batch 128,
λ ∈ {0, 0.1, 0.5, 1, 2} × anneal {none, linear} × seeds (`--runs-seeds`), `--epochs` epochs,
Bernoulli likelihood of the grayscale pixels, batch free bits, Adam 1e-3. Trained four ways, each in
its own subprocess (its wall time is the whole process: start, imports, data, training, evaluation,
files; its peak memory is that process's alone):

  (a) freebits  `python -m freebits_cli sweep ... --set eval.iwae_samples=0` (defaults otherwise:
                one pack, per-epoch evaluation, mutual information at the end, checkpoints, CSVs)
  (b) pack1     the same with `--pack-size 1` (one run at a time through the same trainer)
  (c) torchvision  the usual loop: FashionMNIST + ToTensor + DataLoader(shuffle), an nn.Module,
                one run after another, test ELBO every epoch (benchmarks/plain_loop.py)
  (d) tensor    the same loop with the data as one tensor on the device and index-gathered batches

Then a scaling table: freebits packs of K = 1, 2, 5, 10, 30 (and 64 on CUDA) runs training a fixed
number of steps (a training-set subset written as a temporary .npz), in one warmed-up process.

Machines differ, and a shared machine changes speed from minute to minute: the ratios between ways
measured in the same invocation are what count, not the absolute seconds.

Run: PYTHONPATH=. python3 benchmarks/speed.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from speed_report import BATCH, HIDDEN, LATENT, WAYS, markdown, report

HERE = Path(__file__).resolve().parent
LAMBDAS, ANNEAL = "0,0.1,0.5,1,2", "none,linear"
#: Debian's `dataset-fashion-mnist` (the same default freebits' data.py knows).
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
STEMS = {
    "train": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ------------------------------------------------------------------------------------------------
# Child processes (each way runs in one, so its wall time and memory are its own)


def child_cli(result: str, cli_args: list[str]) -> int:
    """`python -m freebits_cli CLI_ARGS` in this process, then its CUDA peak memory into `result`."""
    sys.argv = ["freebits", *cli_args]
    code: Any = 0
    try:
        runpy.run_module("freebits_cli", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    stats: dict[str, Any] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        stats["threads"] = torch.get_num_threads()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            stats["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    Path(result).write_text(json.dumps(stats))
    return code if isinstance(code, int) else (0 if code is None else 1)


def child_peak(result: str, device_name: str, budget: float) -> int:
    """fp32 matmul rate of a large torch.mm on the device (best of repeats), and machine facts."""
    import torch

    device = torch.device(device_name)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 proper, as freebits' default precision
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best, spent = 0.0, 0.0
    for rep in range(50):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        if rep:  # the first call pays for thread pools, cuBLAS handles and kernel choice
            best = max(best, 2 * n**3 / seconds)
            spent += seconds
        if rep >= 3 and spent > budget:
            break
    info = {
        "peak_gflops": best / 1e9,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
    }
    Path(result).write_text(json.dumps(info))
    return 0


def scaling_args(npz: str, k: int, device: str, out: Path) -> list[str]:
    """One pack of K runs (seeds 0..K-1, λ = 0.5, linear warm-up), MI and IWAE off, 1 epoch."""
    return [
        *("sweep", "--dataset", npz, "--set", f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]"),
        *("--latent-dim", str(LATENT), "--lambdas", "0.5", "--anneal", "linear"),
        *("--seeds", ",".join(str(s) for s in range(k)), "--epochs", "1"),
        *("--set", "eval.iwae_samples=0", "--set", "eval.mi=false", "--pack-size", str(k)),
        *("--device", device, "--out", str(out)),
    ]


def child_scaling(config_path: str) -> int:
    """Train packs of each K in this one process (after an untimed warm-up); seconds per K."""
    config = json.loads(Path(config_path).read_text())
    out = Path(config["out"])
    times: dict[str, float] = {}
    # The first pack pays for lazy imports, kernel choice and the data cache: an untimed warm-up.
    for label, k in [("warm-up", 1), *((str(k), k) for k in config["ks"])]:
        target = out / label
        sys.argv = ["freebits", *scaling_args(config["npz"], k, config["device"], target)]
        started = time.perf_counter()
        try:
            runpy.run_module("freebits_cli", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return exc.code if isinstance(exc.code, int) else 1
        times[label] = time.perf_counter() - started
        shutil.rmtree(target, ignore_errors=True)
    Path(config["result"]).write_text(json.dumps(times))
    return 0


# ------------------------------------------------------------------------------------------------
# The orchestrator


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def find_idx(folder: Path, stem: str) -> Path | None:
    for sub in ("", "raw", "FashionMNIST/raw"):
        for name in (stem, f"{stem}.gz"):
            if (folder / sub / name).is_file():
                return folder / sub / name
    return None


def default_data_dir() -> Path:
    """Debian's dataset-fashion-mnist if installed, else freebits' download cache."""
    if find_idx(DEBIAN_DIR, STEMS["train"]):
        return DEBIAN_DIR
    return Path(os.environ.get("FREEBITS_DATA", Path.home() / ".cache" / "freebits"))


def read_idx(path: Path) -> np.ndarray:
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def torchvision_root(data_dir: Path, scratch: Path) -> Path:
    """ROOT/FashionMNIST/raw/<uncompressed IDX files>: what torchvision reads with download=False."""
    raw = scratch / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in STEMS.values():
        found = find_idx(data_dir, stem)
        if found is None:
            raise SystemExit(f"error: --data-dir {data_dir}: no {stem}[.gz] (Fashion-MNIST IDX)")
        opener = gzip.open if found.suffix == ".gz" else open
        with opener(found, "rb") as src, open(raw / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return scratch / "tv"


def write_npz(data_dir: Path, path: Path, n_train: int, n_test: int) -> None:
    x_train = read_idx(find_idx(data_dir, STEMS["train"]))  # type: ignore[arg-type]
    x_test = read_idx(find_idx(data_dir, STEMS["test"]))  # type: ignore[arg-type]
    np.savez(path, x_train=x_train[:n_train], x_test=x_test[:n_test])


def run_child(command: list[str], log: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run one child; (wall seconds, peak RSS in MB from the kernel's rusage)."""
    with open(log, "w") as handle:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise SystemExit(f"{tail}\nerror: {command[1]} exited with {process.returncode}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return seconds, usage.ru_maxrss * scale / 2**20


#: The plan line's "on 2 workers × 1 thread on 2 cores": the choice a freebits sweep made.
PLAN = re.compile(r"pack\(s\)(?: on (.+?))? -> ")


def plan_choice(log: Path) -> str:
    """The workers × threads a freebits child chose, from its plan line ("?": none printed)."""
    found = PLAN.search(log.read_text(errors="replace"))
    return (found.group(1) if found else None) or "?"


def freebits_elbos(out: Path) -> dict[str, float]:
    elbos = {}
    for path in out.rglob("summary.json"):
        summary = json.loads(path.read_text())
        elbos[summary["run_id"]] = float(summary["test_elbo"])
    return elbos


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Machines differ, and a shared machine changes speed from minute to minute: only the "
            "ratios measured side by side in one invocation count. Each way runs in its own "
            "subprocess; wall seconds are whole processes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist "
        "if installed, else $FREEBITS_DATA or ~/.cache/freebits)",
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runs-seeds", type=int, default=1, help="seeds per setting: 10·N runs")
    parser.add_argument("--skip", default="", help="ways to leave out: a,b,c,d and/or scaling")
    parser.add_argument("--quick", action="store_true", help="small subsets: a smoke run")
    parser.add_argument("--n-train", type=int, default=0, help="first N training images (0: all)")
    parser.add_argument("--n-test", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument(
        "--ks",
        default=None,
        help="scaling pack sizes (default: 1,2,5,10,30; 64 too on CUDA; 1,2,5 with --quick)",
    )
    parser.add_argument("--scaling-steps", type=int, default=0, help="steps per scaling run")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra freebits override for (a) and (b), e.g. eval.mi=false (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=None, help="save all figures here")
    parser.add_argument("--markdown", type=Path, default=None, help="save the tables here")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.n_train, args.n_test = args.n_train or 1024, args.n_test or 256
    default_ks = "1,2,5" if args.quick else "1,2,5,10,30,64" if cuda else "1,2,5,10,30"
    args.ks = [int(k) for k in (args.ks or default_ks).split(",")]
    args.scaling_steps = args.scaling_steps or (4 if args.quick else 200 if cuda else 50)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - {*WAYS, "scaling"}
    if unknown:
        parser.error(f"--skip: unknown {sorted(unknown)} (a, b, c, d, scaling)")
    args.data_dir = args.data_dir or default_data_dir()
    if find_idx(args.data_dir, STEMS["train"]) is None:
        parser.error(f"--data-dir {args.data_dir}: no {STEMS['train']}[.gz] (Fashion-MNIST IDX)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-cli"]:
        return child_cli(argv[1], argv[2:])
    if argv[:1] == ["--child-peak"]:
        return child_peak(argv[1], argv[2], float(argv[3]))
    if argv[:1] == ["--child-scaling"]:
        return child_scaling(argv[1])
    args = parse_args(argv)
    env = dict(os.environ)
    root = str(HERE.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    figures: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="freebits-speed-") as tmp:
        scratch = Path(tmp)
        figures["load_before"] = os.getloadavg()
        figures["machine"] = peak(args, scratch, env)
        figures["ways"] = ways(args, scratch, env)
        if "scaling" not in args.skip:
            figures["scaling"] = scaling(args, scratch, env)
        if not args.quick:  # the peak again, after the run: the machine's load may have changed
            again = peak(args, scratch, env)["peak_gflops"]
            figures["machine"]["peak_gflops"] = max(figures["machine"]["peak_gflops"], again)
        figures["load_after"] = os.getloadavg()
    report(figures, args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(figures, args))
    return 0


def peak(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    budget = 0.3 if args.quick else 2.0  # seconds of timed matmuls
    result = scratch / "peak.json"
    run_child(
        [sys.executable, __file__, "--child-peak", str(result), args.device, str(budget)],
        scratch / "peak.log",
        env,
    )
    return json.loads(result.read_text())


def ways(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    """Train the benchmark sweep by each way not skipped; seconds, memory, ELBOs per way."""
    seeds = ",".join(str(s) for s in range(args.runs_seeds))
    subset = bool(args.n_train or args.n_test)
    tv_root = torchvision_root(args.data_dir, scratch)
    n_train = args.n_train or len(read_idx(tv_root / "FashionMNIST/raw" / STEMS["train"]))
    n_test = args.n_test or len(read_idx(tv_root / "FashionMNIST/raw" / STEMS["test"]))
    if subset:  # freebits reads the same first images from a generated .npz
        npz = scratch / "subset.npz"
        write_npz(args.data_dir, npz, n_train, n_test)
        data = ["--dataset", str(npz)]
    else:
        data = ["--dataset", "fashion-mnist", "--data-dir", str(args.data_dir)]
    sweep = [
        "sweep",
        *data,
        *("--set", f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]", "--latent-dim", str(LATENT)),
        *("--lambdas", LAMBDAS, "--anneal", ANNEAL, "--seeds", seeds),
        *("--epochs", str(args.epochs), "--set", "eval.iwae_samples=0"),
        *[item for s in args.extra for item in ("--set", s)],
        *("--device", args.device),
    ]
    plain = [
        sys.executable,
        str(HERE / "plain_loop.py"),
        *("--root", str(tv_root), "--lambdas", LAMBDAS, "--anneal", ANNEAL, "--seeds", seeds),
        *("--epochs", str(args.epochs), "--device", args.device),
        *("--n-train", str(args.n_train), "--n-test", str(args.n_test)),
    ]
    commands = {
        "a": [sys.executable, __file__, "--child-cli", "", *sweep, "--out", str(scratch / "a")],
        "b": [
            *(sys.executable, __file__, "--child-cli", ""),
            *(*sweep, "--pack-size", "1", "--out", str(scratch / "b")),
        ],
        "c": [*plain, "--loader", "torchvision", "--result", ""],
        "d": [*plain, "--loader", "tensor", "--result", ""],
    }
    runs = 10 * args.runs_seeds
    out: dict[str, Any] = {
        "runs": runs,
        "epochs": args.epochs,
        "n_train": n_train,
        "n_test": n_test,
        "commands": {},
    }
    for way, command in commands.items():
        if way in args.skip:
            continue
        result = scratch / f"{way}.json"
        command[command.index("")] = str(result)
        print(f"{WAYS[way]:<28} ...", end=" ", flush=True)
        seconds, rss = run_child(command, scratch / f"{way}.log", env)
        stats = json.loads(result.read_text())
        shown_choice = ""
        if way in "ab":
            stats["test_elbo"] = freebits_elbos(scratch / way)
            stats["choice"] = plan_choice(scratch / f"{way}.log")
            shown_choice = f"  ({stats['choice']})"
            shutil.rmtree(scratch / way, ignore_errors=True)
        print(f"{seconds:8.1f} s{shown_choice}", flush=True)
        out[way] = {"seconds": seconds, "rss_mb": rss, **stats}
        shown = ["python", "-m", "freebits_cli", *command[4:]] if way in "ab" else command
        out["commands"][way] = " ".join(shown)
    return out


def scaling(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    """Packs of K runs training `scaling_steps` steps of batch 128 each, in one process."""
    n_train, n_test = args.scaling_steps * BATCH, 512 if args.quick else 1000
    npz = scratch / "scaling.npz"
    write_npz(args.data_dir, npz, n_train, n_test)
    config = {
        "npz": str(npz),
        "ks": args.ks,
        "device": args.device,
        "out": str(scratch / "scaling"),
        "result": str(scratch / "scaling.json"),
    }
    (scratch / "scaling-config.json").write_text(json.dumps(config))
    print(f"scaling: packs of K = {args.ks}, {args.scaling_steps} steps ...", end=" ", flush=True)
    seconds, rss = run_child(
        [sys.executable, __file__, "--child-scaling", str(scratch / "scaling-config.json")],
        scratch / "scaling.log",
        env,
    )
    print(f"{seconds:8.1f} s", flush=True)
    times = json.loads(Path(config["result"]).read_text())
    return {"n_train": n_train, "n_test": n_test, "seconds": times, "rss_mb": rss}


if __name__ == "__main__":
    raise SystemExit(main())
