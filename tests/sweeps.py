"""The tests' way to run a sweep in this process: `run_sweep`, as `freebits sweep` calls it,
with the epoch and step callbacks a test needs to watch (or stop) the training."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from freebits_cli.spec import SweepSpec
from freebits_cli.sweep.run import Hooks, SweepOptions, SweepResult, run_sweep
from freebits_cli.sweep.runs import Callbacks


def run(
    spec: SweepSpec,
    out: Path,
    *,
    on_epoch: Any = None,
    on_step: Any = None,
    **options: Any,
) -> SweepResult:
    """Run `spec` under `out` with `SweepOptions(**options)`; the callbacks see its progress."""
    if spec.train.device == "auto":  # the tests train on the CPU, GPU or not (tests/cuda: GPU)
        spec = replace(spec, train=replace(spec.train, device="cpu"))
    callbacks = Callbacks(on_epoch=on_epoch, on_step=on_step)
    hooks = Hooks(progress=lambda _packs, _jobs: nullcontext(callbacks))
    return run_sweep(spec, out, SweepOptions(**options), hooks)


def train(spec: SweepSpec, out: Path, **kwargs: Any) -> list[Any]:
    """The outcome of each run `run` trained."""
    return run(spec, out, **kwargs).outcomes
