"""Where the time of one freebits pack's training goes, by category, printed as a table.

Runs the benchmark sweep of `speed.py` (Fashion-MNIST, MLP 784-512-256-32, λ ∈ {0, 0.1, 0.5, 1, 2} ×
anneal {none, linear}: one pack of 10 runs, 1 epoch, IWAE off, MI on) through the CLI in this
process, with timers wrapped around the trainer's parts:

  train: forward          the model's encode/decode/nll, KL and free-bits terms inside train_epoch
  train: backward         Tensor.backward
  train: optimizer        optimizer.step (global step hooks) and zero_grad
  train: random draws     PackTrainer._draw (reparameterisation noise, binarisation coins)
  train: gather, rest     the rest of train_epoch: permutations, batch gathers, β table, loss sums
  evaluation: ...         per-epoch test ELBO/KL/AU (metrics.evaluate), IWAE, MI, probe, the rest of
                          PackTrainer._evaluate_epoch (row building)
  checkpoint              member_state + storage.save_checkpoint
  CSV rows                records.append_epoch
  finish                  samples and summary.json (PackTrainer._finish)
  setup                   PackTrainer.__init__ (data to the device, model, optimizer)
  CLI, rest               spec, plan, data loading, config files, the results table

Each second is charged to the innermost category running (exclusive time); `forward` etc. count only
inside train_epoch (the evaluation's forward passes stay evaluation). Hooks that the trainer does not
call (e.g. a step replayed from a CUDA graph) show as 0 and their time lands in `gather, rest`. On
CUDA every boundary synchronises (`--no-sync` to turn off), so categories are attributable but the
total runs a little slower. `--ops N` adds torch.profiler's top-N operators by self time.

Run: PYTHONPATH=. python3 benchmarks/profile_step.py [--device cuda] [--n-train 12800]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import runpy
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from speed import STEMS, default_data_dir, find_idx, read_idx
from speed_report import HIDDEN, LATENT

REST = "CLI, rest (spec, plan, data loading, files, table)"
TRAIN_REST = "train: gather, rest"
ORDER = [
    "train: forward",
    "train: backward",
    "train: optimizer",
    "train: random draws",
    TRAIN_REST,
    "evaluation: ELBO/KL/AU",
    "evaluation: IWAE",
    "evaluation: MI",
    "evaluation: probe",
    "evaluation: rest",
    "checkpoint",
    "CSV rows",
    "finish (samples, summary)",
    "setup (data to device, model)",
    REST,
]


class Timer:
    """Exclusive wall time per category, charged at every boundary to the innermost one."""

    def __init__(self, sync: Callable[[], None] | None) -> None:
        self.stack = [REST]
        self.totals: dict[str, float] = defaultdict(float)
        self.sync = sync
        self.last = time.perf_counter()

    def _charge(self) -> None:
        if self.sync is not None:
            self.sync()
        now = time.perf_counter()
        self.totals[self.stack[-1]] += now - self.last
        self.last = now

    def enter(self, label: str) -> None:
        self._charge()
        inside_train = self.stack[-1].startswith("train")
        if label.startswith("train: ") and label != TRAIN_REST and not inside_train:
            label = self.stack[-1]  # e.g. encode() during evaluation stays evaluation
        self.stack.append(label)

    def exit(self) -> None:
        self._charge()
        if len(self.stack) > 1:
            self.stack.pop()

    def wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.enter(label)
            try:
                return fn(*args, **kwargs)
            finally:
                self.exit()

        return timed


def install(timer: Timer) -> None:
    """Wrap the trainer's parts; a part the current code base lacks is skipped."""
    import torch
    import torch.optim.optimizer as step_hooks

    from freebits_cli.engine import probe, scores, train
    from freebits_cli.results import records, storage

    def patch(owner: Any, name: str, label: str) -> None:
        if hasattr(owner, name):
            setattr(owner, name, timer.wrap(getattr(owner, name), label))

    cls = train.PackTrainer
    patch(cls, "train_epoch", TRAIN_REST)
    patch(cls, "_draw", "train: random draws")
    patch(cls, "_free_bits", "train: forward")
    patch(cls, "_evaluate_epoch", "evaluation: rest")
    patch(cls, "member_state", "checkpoint")
    patch(cls, "_finish", "finish (samples, summary)")
    patch(cls, "__init__", "setup (data to device, model)")
    patch(train, "gaussian_kl_per_dim", "train: forward")
    patch(train, "evaluate", "evaluation: ELBO/KL/AU")
    patch(train, "iwae_nll", "evaluation: IWAE")
    patch(train, "mutual_information", "evaluation: MI")
    # Per-epoch and final scores go through engine.scores, which holds its own names.
    patch(scores, "evaluate", "evaluation: ELBO/KL/AU")
    patch(scores, "iwae_nll", "evaluation: IWAE")
    patch(scores, "information", "evaluation: MI")
    patch(probe, "probe_accuracy", "evaluation: probe")
    patch(storage, "save_checkpoint", "checkpoint")
    patch(records, "append_epoch", "CSV rows")
    patch(torch.Tensor, "backward", "train: backward")
    patch(torch.optim.Optimizer, "zero_grad", "train: optimizer")
    step_hooks.register_optimizer_step_pre_hook(lambda *_: timer.enter("train: optimizer"))
    step_hooks.register_optimizer_step_post_hook(lambda *_: timer.exit())
    if hasattr(train, "build_model"):
        build = train.build_model

        def build_timed(*args: Any, **kwargs: Any) -> Any:
            model = build(*args, **kwargs)
            for name in ("encode", "decode", "nll"):
                if hasattr(model, name):
                    setattr(model, name, timer.wrap(getattr(model, name), "train: forward"))
            return model

        train.build_model = build_timed


def warm_up(device: Any) -> None:
    """Pay for lazy imports (the first Adam step imports torch._dynamo) outside the table."""
    import torch

    w = torch.zeros(4, 4, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([w])
    (w.sum() * 2).backward()
    optimizer.step()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None, help="as in speed.py")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=0, help="first N training images (0: all)")
    parser.add_argument("--n-test", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-sync", action="store_true", help="CUDA: no sync at boundaries")
    parser.add_argument("--ops", type=int, default=0, help="also torch.profiler's top N ops")
    parser.add_argument("--json", type=Path, default=None, help="save the table here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import torch

    import freebits_cli.cli  # noqa: F401  (imports outside the table)

    device = torch.device(args.device)
    warm_up(device)
    imports = time.perf_counter() - started
    data_dir = args.data_dir or default_data_dir()
    with tempfile.TemporaryDirectory(prefix="freebits-profile-") as tmp:
        if args.n_train or args.n_test:
            npz = Path(tmp) / "subset.npz"
            found = [find_idx(data_dir, STEMS[split]) for split in ("train", "test")]
            if None in found:
                raise SystemExit(f"error: --data-dir {data_dir}: no Fashion-MNIST IDX files")
            x_train, x_test = (read_idx(path) for path in found)  # type: ignore[arg-type]
            n_train, n_test = args.n_train or len(x_train), args.n_test or len(x_test)
            np.savez(npz, x_train=x_train[:n_train], x_test=x_test[:n_test])
            data = ["--dataset", str(npz)]
        else:
            data = ["--dataset", "fashion-mnist", "--data-dir", str(data_dir)]
        sys.argv = [
            "freebits",
            "sweep",
            *data,
            *("--set", f"model.hidden=[{HIDDEN[0]},{HIDDEN[1]}]", "--latent-dim", str(LATENT)),
            *("--lambdas", "0,0.1,0.5,1,2", "--anneal", "none,linear", "--seeds", "0"),
            *("--epochs", str(args.epochs), "--set", "eval.iwae_samples=0"),
            *[item for s in args.extra for item in ("--set", s)],
            *("--device", args.device, "--out", str(Path(tmp) / "out")),
            # The hooks time this process: the pack trains here, not in workers.
            *("--jobs", "1"),
        ]
        cuda = device.type == "cuda"
        timer = Timer(torch.cuda.synchronize if cuda and not args.no_sync else None)
        install(timer)
        profiler = None
        if args.ops:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            profiler = torch.profiler.profile(activities=activities)
            profiler.__enter__()
        timer.last = begin = time.perf_counter()
        try:  # the CLI's own progress and results table would bury the profile
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                runpy.run_module("freebits_cli", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return exc.code if isinstance(exc.code, int) else 1
        timer.exit()
        total = time.perf_counter() - begin
        if profiler is not None:
            profiler.__exit__(None, None, None)
    print_table(timer.totals, total, imports, args, torch.__version__, torch.get_num_threads())
    if profiler is not None:
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(profiler.key_averages().table(sort_by=key, row_limit=args.ops))
    if args.json:
        args.json.write_text(json.dumps({"total": total, "imports": imports, **timer.totals}))
    return 0


def print_table(
    totals: dict[str, float],
    total: float,
    imports: float,
    args: argparse.Namespace,
    version: str,
    threads: int,
) -> None:
    train = sum(v for k, v in totals.items() if k.startswith("train"))
    evaluation = sum(v for k, v in totals.items() if k.startswith("evaluation"))
    per_epoch = totals.get("evaluation: ELBO/KL/AU", 0.0) + totals.get("evaluation: rest", 0.0)
    print()
    print(
        f"profile: one pack of 10 runs, {args.epochs} epoch(s), device {args.device}, torch "
        f"{version}, {threads} threads; imports + warm-up before it: {imports:.1f} s"
    )
    print()
    print("| category | seconds | share |")
    print("|---|---:|---:|")
    for label in ORDER:
        seconds = totals.get(label, 0.0)
        print(f"| {label} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    print(f"| **training epoch(s), all** | **{train:.2f}** | **{100 * train / total:.1f}%** |")
    print(f"| **evaluation, all** | **{evaluation:.2f}** | **{100 * evaluation / total:.1f}%** |")
    print(f"| **total (CLI call)** | **{total:.2f}** | 100% |")
    print()
    print(
        f"per-epoch evaluation (ELBO/KL/AU + rows) = {100 * per_epoch / max(train, 1e-9):.1f}% "
        "of the training epoch time"
    )


if __name__ == "__main__":
    raise SystemExit(main())
