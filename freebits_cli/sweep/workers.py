"""Train packs in worker processes, one per device slot, pulling packs from a shared queue.

Each worker owns one device (slot i takes device i mod the device count) and takes the next pack
when it finishes one, so a slow pack never holds back the others. Workers record SIGTERM/SIGINT and
the death of the sweep process (`interrupt`), so they stop between training steps; the parent
forwards its own stop signal to them, waits, and forwards it again (which exits at once) to any
worker still busy, so no process of the sweep outlives it by more than a few seconds. Runs resume
from their last complete epoch's checkpoints either way.

On a CPU the parent hands out packs only as fast as the sweep's share of the cores allows: before
each pack it reads the registry of trainers again, and workers beyond its share wait (and the
registry says the cores the sweep uses now), so a sweep that started alone gives a core back to
one started beside it within a pack's time, and takes it again when that one ends.

A worker says when it is ready (torch imported, its first pack's data set loaded); the slowest
worker's start-up is kept in the registry of trainers, the cost `cores.choose` weighs next time.
Workers start with OpenMP's brief spin (`cores.brief_spin`) unless the user chose how threads
wait (read when torch loads).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from freebits_cli.engine import interrupt
from freebits_cli.errors import Interrupted, TrainingError
from freebits_cli.sweep import cores, trainers
from freebits_cli.sweep.runs import Callbacks

if TYPE_CHECKING:
    from freebits_cli.engine.train import Outcome
    from freebits_cli.sweep.runs import PlannedRun

#: Seconds a worker gets to stop at its next training step before the signal is sent again.
GRACE_S = 5.0
POLL_S = 0.2
#: Seconds between reads of the registry while some workers wait for a share of the cores.
SHARE_POLL_S = 2.0


def _worker(
    slot: int,
    device: str,
    threads: int,
    parent: int,
    tasks: Any,
    results: Any,
    grid_paths: Sequence[str],
    progress: bool = False,
) -> None:
    from freebits_cli.sweep.pack_runner import train_pack

    def on_epoch(run_ids: Sequence[str], epoch: int, epochs: int) -> None:
        results.put(("epoch", -1, (list(run_ids), epoch, epochs)))

    def on_step(run_ids: Sequence[str], epoch: int, step: int, steps: int) -> None:
        results.put(("step", -1, (list(run_ids), epoch, step, steps)))

    interrupt.watch_parent(parent)
    ready = False
    with interrupt.handling_signals():
        while True:
            try:
                item = tasks.get(timeout=POLL_S)
            except queue.Empty:
                if interrupt.received() is not None:
                    return
                continue
            if item is None:
                return
            index, pack = item
            if not ready:  # imports and the data set loaded: what starting a worker costs
                import torch  # noqa: F401

                from freebits_cli.sweep.runs import dataset

                dataset(pack[0].run.dataset)
                results.put(("ready", slot, None))
                ready = True
            try:
                callbacks = Callbacks(on_epoch, on_step) if progress else Callbacks()
                outcomes = train_pack(pack, grid_paths, device, threads, callbacks)
                results.put(("done", index, outcomes))
            except Interrupted as exc:
                results.put(("interrupted", index, exc.signum))
                return
            except BaseException as exc:  # reported to the parent, which stops the sweep
                results.put(("error", index, f"{exc.__class__.__name__}: {exc}"))
                return


def _stop(workers: Sequence[Any], signum: int) -> None:
    """Signal every live worker; those not stopped within GRACE_S get the signal again (which
    makes `interrupt` exit at once), then anything left is killed."""
    for attempt in range(3):
        alive = [w for w in workers if w.is_alive()]
        if not alive:
            return
        for w in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signum if attempt < 2 else signal.SIGKILL)
        for w in alive:
            w.join(timeout=GRACE_S if attempt == 0 else 1.0)


def run_packs(
    packs: Sequence[Sequence[PlannedRun]],
    grid_paths: Sequence[str],
    devices: Sequence[str],
    jobs: int,
    threads: int,
    callbacks: Callbacks = Callbacks(),
    limit: cores.Cores | None = None,
) -> list[Outcome]:
    """Train `packs` in `jobs` worker processes; returns every outcome, in completion order.
    With `limit` (a CPU sweep's cores) at most its share of them trains at once, `threads` each.

    Workers send their epoch and step progress over the results queue when asked to, and the
    callbacks run here, in the parent."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    tasks, results = context.Queue(), context.Queue()
    jobs = min(jobs, len(packs))
    feed = _Feed(packs, tasks, jobs, threads, limit)
    workers = [
        context.Process(
            target=_worker,
            args=(
                i,
                devices[i % len(devices)],
                threads,
                os.getpid(),
                tasks,
                results,
                grid_paths,
                callbacks.on_epoch is not None or callbacks.on_step is not None,
            ),
            name=f"freebits-worker-{i}",
        )
        for i in range(jobs)
    ]
    feed()
    started = _start(workers)
    startup: list[float] = []
    outcomes: list[Outcome] = []
    pending = len(packs)
    try:
        while pending:
            try:
                kind, index, payload = results.get(timeout=POLL_S)
            except queue.Empty:
                signum = interrupt.received()
                if signum is not None:
                    raise Interrupted(signum) from None
                feed.poll()
                dead = [w for w in workers if not w.is_alive() and w.exitcode != 0]
                if dead and results.empty():
                    raise TrainingError(
                        f"worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                        "run the same command again to resume"
                    ) from None
                continue
            if kind == "ready":
                startup.append(time.perf_counter() - started[index])
                if len(startup) == len(workers):  # the slowest worker is what a split waits for
                    trainers.record_startup(max(startup))
                continue
            if kind == "epoch":
                if callbacks.on_epoch is not None:
                    callbacks.on_epoch(*payload)
                continue
            if kind == "step":
                if callbacks.on_step is not None:
                    callbacks.on_step(*payload)
                continue
            if kind == "interrupted":
                raise Interrupted(payload)
            if kind == "error":
                raise TrainingError(f"pack {index}: {payload}")
            pending -= 1
            feed.done()
            outcomes += payload
            if callbacks.on_pack is not None:
                callbacks.on_pack(payload)
    except BaseException as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGTERM
        _stop(workers, signum)
        raise
    finally:
        for w in workers:
            w.join(timeout=GRACE_S)
        tasks.cancel_join_thread()
        results.cancel_join_thread()
    return outcomes


class _Feed:
    """Hands packs to the task queue no faster than the sweep's share of the cores allows: at most
    `share()` packs out at once (all of them without a `limit`), then one stop sign per worker."""

    def __init__(
        self,
        packs: Sequence[Sequence[PlannedRun]],
        tasks: Any,
        jobs: int,
        threads: int,
        limit: cores.Cores | None,
    ) -> None:
        self.waiting = list(enumerate(packs))
        self.tasks, self.jobs, self.threads, self.limit = tasks, jobs, threads, limit
        self.out, self.polled = 0, time.monotonic()

    def share(self) -> int:
        """Packs that may be out at once now: the sweep's cores beside other trainers over the
        threads of a worker, at least one; registered as the cores the sweep uses. Without a
        limit, or for GPU workers (torch's threads, `threads` 0), every pack."""
        if self.limit is None or not self.threads:
            return len(self.waiting) + self.out
        count = cores.shared(self.limit, trainers.others()).count
        allowed = max(1, min(self.jobs, count // self.threads))
        trainers.register(allowed * self.threads)
        return allowed

    def __call__(self) -> None:
        if not self.waiting:
            return
        allowed = self.share()
        while self.waiting and self.out < allowed:
            self.tasks.put(self.waiting.pop(0))
            self.out += 1
        if not self.waiting:
            for _ in range(self.jobs):
                self.tasks.put(None)

    def done(self) -> None:
        self.out -= 1
        if self.waiting:
            self()
        elif (
            self.limit is not None and self.threads
        ):  # the last packs: cores given back as they end
            trainers.register(max(1, self.out) * self.threads)

    def poll(self) -> None:
        """Now and then, while packs wait for a share, whether the share has grown."""
        if self.waiting and time.monotonic() - self.polled >= SHARE_POLL_S:
            self.polled = time.monotonic()
            self()


def _start(workers: Sequence[Any]) -> list[float]:
    """Start the workers, with OpenMP's brief spin in their environment (read when their torch
    loads) unless the user chose how threads wait; returns when each was started."""
    from freebits_cli.sweep.cores import SPIN_COUNT, brief_spin

    name = SPIN_COUNT[0]
    own = os.environ.get(name)
    brief_spin()
    started = []
    try:
        for w in workers:
            started.append(time.perf_counter())
            w.start()
    finally:
        if own is None:
            os.environ.pop(name, None)
    return started
