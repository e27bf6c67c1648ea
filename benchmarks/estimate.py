"""How far is `freebits sweep --dry-run`'s time estimate from the real run? Estimate / actual over
several sweep shapes (MLP and conv on images, the LSTM on text), each trained for real afterwards.

For each shape: the dry run's estimate (FLOPs / the pilot's measured rate, with its range), then
the same sweep trained in this process, timed from the first pack to the last (planning, data
loading and the report excluded, as in the estimate). A ratio above 1 is an estimate too long.
The shapes are small (seconds to a minute each): the machine is shared, so the ratios also show
what load does to an estimate made a minute earlier.

Run: PYTHONPATH=. python3 benchmarks/estimate.py [--shapes digits-mlp,fashion-conv,...]
     [--fashion DIR] [--repeat N] [--markdown FILE]
(the text shape writes the fortunes corpus: apt install fortunes.)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> (what it is, --set overrides). Every shape: 3 runs (λ 0, 0.5, 1), one pack.
SHAPES: dict[str, tuple[str, list[str]]] = {
    "digits-mlp": (
        "digits, MLP [256, 128], D = 16, 5 epochs",
        ["dataset.name=digits", "train.epochs=5"],
    ),
    "digits-mlp-iwae": (
        "digits, MLP [256, 128], D = 16, 3 epochs, IWAE k = 500 at the end",
        ["dataset.name=digits", "train.epochs=3", "eval.iwae_samples=500"],
    ),
    "fashion-mlp": (
        "Fashion-MNIST 3,000/500, MLP [512, 256], D = 32, 2 epochs",
        [
            "dataset.name=fashion-mnist",
            "dataset.train_size=3000",
            "dataset.test_size=500",
            "model.hidden=[512, 256]",
            "model.latent_dim=32",
            "train.epochs=2",
        ],
    ),
    "fashion-conv": (
        "Fashion-MNIST 1,000/300, conv 32-32-64-64, D = 16, 1 epoch",
        [
            "dataset.name=fashion-mnist",
            "dataset.train_size=1000",
            "dataset.test_size=300",
            "model.arch=conv",
            "train.epochs=1",
        ],
    ),
    "text-lstm": (
        "fortunes 1,000 sentences, LSTM 128, embeddings 128, D = 16, 2 epochs",
        [
            "dataset.name=text",
            "dataset.train_size=1000",
            "dataset.max_vocab=5000",
            "model.embedding_dim=128",
            "model.hidden=[128]",
            "model.latent_dim=16",
            "train.batch_size=32",
            "train.epochs=2",
        ],
    ),
}
COMMON = ["eval.iwae_samples=50", "eval.samples=0", "train.device=cpu"]


def spec_for(name: str, fashion: Path | None, corpus: Path | None) -> Any:
    from freebits_cli.spec.files import build_spec, parse_override

    settings = [*COMMON, *SHAPES[name][1]]  # the shape's own settings come last and win
    overrides = [parse_override(s) for s in settings]
    overrides += [("grid.lambda", [0, 0.5, 1]), ("name", name)]
    if name.startswith("fashion") and fashion is not None:
        overrides.append(("dataset.data_dir", str(fashion)))
    if name.startswith("text"):
        overrides.append(("dataset.data_dir", str(corpus)))
    return build_spec(None, overrides)


def estimate_then_train(spec: Any, out: Path) -> dict[str, Any]:
    from freebits_cli.sweep import dryrun
    from freebits_cli.sweep.run import Hooks, SweepOptions, run_sweep

    seen: dict[str, Any] = {}

    def planned(p: Any) -> None:
        seen["est"] = dryrun.estimate_planned(p)[0]

    started = time.perf_counter()
    run_sweep(spec, out, SweepOptions(dry_run=True), Hooks(planned=planned))
    pilot_s = time.perf_counter() - started
    times: list[float] = []

    def progress(packs: Any, jobs: int) -> Any:
        from contextlib import contextmanager

        from freebits_cli.sweep.runs import Callbacks

        @contextmanager
        def timing() -> Any:
            t0 = time.perf_counter()
            yield Callbacks()
            times.append(time.perf_counter() - t0)

        return timing()

    result = run_sweep(spec, out, SweepOptions(), Hooks(progress=progress))
    assert not result.failed, result.failed
    est = seen["est"]
    return {
        "estimate": est.wall_seconds,
        "low": est.wall_low,
        "high": est.wall_high,
        "actual": sum(times),
        "pilot_s": pilot_s,
        "flops": est.flops,
    }


def load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "?"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--fashion", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--repeat", type=int, default=1, help="Times each shape is measured.")
    parser.add_argument("--markdown", type=Path, help="Also write the table to this file.")
    args = parser.parse_args(argv)
    import torch

    from freebits_cli.sweep.dryrun import human_seconds

    shapes = [s for s in args.shapes.split(",") if s]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = None
        if any(s.startswith("text") for s in shapes):
            corpus = Path(tmp) / "corpus"
            subprocess.run(
                [sys.executable, str(ROOT / "benchmarks" / "fortunes_corpus.py"), str(corpus)],
                check=True,
                capture_output=True,
            )
        for name in shapes:
            for i in range(args.repeat):
                before = load()
                got = estimate_then_train(spec_for(name, args.fashion, corpus), Path(tmp) / f"r{i}")
                got |= {"shape": name, "load": f"{before} → {load()}"}
                rows.append(got)
                print(
                    f"{name}: estimate {human_seconds(got['estimate'])} "
                    f"({human_seconds(got['low'])}–{human_seconds(got['high'])}), actual "
                    f"{human_seconds(got['actual'])}, ratio {got['estimate'] / got['actual']:.2f}",
                    flush=True,
                )
    lines = [
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)",
        "",
        "| shape | FLOPs | estimate (range) | actual | estimate / actual | in range | pilot | "
        "load avg (before → after) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        inside = r["low"] <= r["actual"] <= r["high"]
        lines.append(
            f"| {SHAPES[r['shape']][0]} | {r['flops'] / 1e9:.0f} GFLOP | "
            f"{human_seconds(r['estimate'])} ({human_seconds(r['low'])}–"
            f"{human_seconds(r['high'])}) | {human_seconds(r['actual'])} | "
            f"{r['estimate'] / r['actual']:.2f} | {'yes' if inside else 'no'} | "
            f"{r['pilot_s']:.1f} s | {r['load']} |"
        )
    ratios = [r["estimate"] / r["actual"] for r in rows]
    lines += [
        "",
        f"estimate / actual: median {statistics.median(ratios):.2f}, "
        f"range {min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)} sweeps; "
        f"{sum(r['low'] <= r['actual'] <= r['high'] for r in rows)} of {len(rows)} inside the "
        "stated range",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
