"""`run_sweep`: everything `freebits sweep` does, as one library call.

In order: refuse a changed spec (or, with `force`, let it replace the sweep); plan every run from
its folder; form the packs once, for the devices (or the cluster) they will train on; let the
caller see the plan (and stop there for a dry run); write the sweep's spec; train here — waiting
for runs another process holds, then training what it left — or submit to Slurm and follow the
jobs; read the final state of every run from the files. Nothing here prints: what a caller shows
comes through `Hooks`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli import schema
from freebits_cli.errors import SpecError
from freebits_cli.results import storage, sweep_folder
from freebits_cli.spec import SweepSpec
from freebits_cli.sweep import executor, trainers
from freebits_cli.sweep.cores import Choice
from freebits_cli.sweep.runs import Callbacks, Plan, PlannedRun

if TYPE_CHECKING:
    from freebits_cli.engine.train import Outcome

EXECUTORS = ("local", "slurm", "submitit-local")
#: Seconds between two looks at submitted jobs when the caller does not watch them itself.
POLL_S = 2.0

Pack = list[PlannedRun]


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep (what `freebits sweep`'s flags other than the spec's say)."""

    jobs: int = 0  # packs trained at once (0: one per GPU; on the CPU, chosen from the cores)
    threads: int = 0  # CPU threads the sweep may use in all (0: every core it may use)
    pack_size: int = 0  # runs per batched model (0: spread over the jobs, what memory holds)
    shard: str | None = None  # "I/N": train only shard I of N of the runs
    dry_run: bool = False  # plan and show, train nothing
    force: bool = False  # train complete runs again; with a changed spec, replace the sweep
    executor: str = "local"  # local | slurm | submitit-local
    wait: bool = True  # with a cluster executor: follow the jobs until they end
    max_failures: int = 0  # stop once this many runs have failed (0: never)
    log: Sequence[Any] = ()  # export targets (export.parse_targets) fed after each epoch


@dataclass(frozen=True)
class Planned:
    """The sweep as planned, before anything is written: what the caller is shown."""

    spec: SweepSpec
    plan: Plan
    packs: list[Pack]
    devices: list[str]
    jobs: int
    retrained: list[str]  # complete runs `force` trains again
    dropped: list[Path]  # run folders a replacing spec deletes
    options: SweepOptions
    #: Packs of the pretrainings to train before the runs (`pretrain`); on a cluster each job
    #: trains or waits for the pretraining its runs need.
    pretrain_packs: list[Pack] = field(default_factory=list)
    choice: Choice | None = None  # workers × threads here (None on a cluster)

    @property
    def on_cluster(self) -> bool:
        return self.options.executor != "local"


@dataclass
class Hooks:
    """What `run_sweep` tells its caller, by name; every hook may be left out.

    `planned` sees the plan before anything is written (it may raise to stop the sweep, e.g. when
    a person declines `force`'s deletions); `warn` and `note` carry one line each; `progress`
    wraps the training of some packs and gives the callbacks that follow it; `submitted` sees a
    cluster submission, and `watch(plan, submission)` follows its jobs until they end."""

    planned: Callable[[Planned], None] | None = None
    warn: Callable[[str], None] = lambda _line: None
    note: Callable[[str], None] = lambda _line: None
    progress: Callable[[Sequence[Pack], int], AbstractContextManager[Callbacks]] | None = None
    submitted: Callable[[Plan, Any], None] | None = None
    watch: Callable[[Plan, Any], None] | None = None


@dataclass
class SweepResult:
    """How a sweep ended; `plan` is read again from the run folders at the end."""

    planned: Planned
    plan: Plan
    trained: int = 0  # runs trained (or failed) in this command
    elsewhere: int = 0  # runs another process finished meanwhile
    stopped: str | None = None  # why it stopped early (max_failures)
    outcomes: list[Outcome] = field(default_factory=list)  # of each run trained here
    job_errors: list[str] = field(default_factory=list)
    submission: Any = None  # a cluster submission (cluster.Submission)

    @property
    def failed(self) -> list[str]:
        return [r.run.run_id for r in self.plan.runs if r.state == "failed"]

    @property
    def exit_code(self) -> int:
        """0 all good; 1 some runs failed, a job failed, or the sweep stopped early."""
        return 1 if self.failed or self.stopped or self.job_errors else 0


class TooManyFailures(Exception):
    pass


def run_sweep(
    spec: SweepSpec,
    out: str | os.PathLike[str],
    options: SweepOptions | None = None,
    hooks: Hooks | None = None,
) -> SweepResult:
    """Run `spec` under the results folder `out`: train every run not yet complete (or submit
    them), then return how each ended. Raises SpecError / ResultsError (one line) on bad input."""
    out, o, h = Path(out), options or SweepOptions(), hooks or Hooks()
    if o.executor not in EXECUTORS:
        raise SpecError("--executor", f"{o.executor!r} is not local, slurm or submitit-local")
    if o.log and o.executor != "local":
        raise SpecError(
            "--log",
            "exports as a local sweep trains; after cluster jobs finish, "
            "run freebits export on the results",
        )
    planned, replacing, submitter = _plan(spec, out, o)
    for warning in planned.plan.warnings:
        h.warn(warning)
    if h.planned is not None:
        h.planned(planned)
    result = SweepResult(planned, planned.plan)
    if o.dry_run:
        return result
    plan, todo = planned.plan, planned.plan.todo
    if todo:
        kind = planned.devices if planned.devices[0] != "auto" else ["cuda"]
        for note in executor.check_ready(plan, kind):
            h.warn(note)
    # Also with nothing to train: a kill may have left a complete run's checkpoint behind.
    executor.prepare(
        plan, spec if replacing else sweep_folder.grown(plan.sweep_dir, spec), replacing
    )
    if not todo:
        h.note("nothing to train: every run is complete (use --force to re-run)")
    elif planned.on_cluster:
        _submit(planned, submitter, h, result)
    else:
        _train_here(planned, out, h, result)
    result.plan = executor.plan(spec, out, shard=o.shard)  # every run, as the files say
    return result


def _plan(spec: SweepSpec, out: Path, o: SweepOptions) -> tuple[Planned, bool, Any]:
    """The plan and its packs, built once; whether the spec replaces the sweep; a cluster's
    submitter (options, submitit and sbatch are checked before anything is written)."""
    sweep_dir = storage.sweep_dir(out, spec.name)
    replacing = False
    try:
        sweep_folder.check_unchanged(sweep_dir, spec)
    except SpecError:
        if not o.force:
            raise
        replacing = True  # force with another spec: this spec replaces the sweep
    plan = executor.plan(spec, out, shard=o.shard)
    retrained = [r.run.run_id for r in plan.runs if r.state == "done"] if o.force else []
    if o.force:
        plan = executor.plan(spec, out, force=True, shard=o.shard)
    submitter, choice = None, None
    if o.executor != "local":
        if not o.dry_run and plan.todo:
            from freebits_cli.sweep.cluster import make_executor

            log_dir = plan.sweep_dir / schema.LOG_DIR
            submitter = make_executor(o.executor, spec.slurm, spec.name, log_dir, spec.train.device)
        # The nodes' memory is not known here: --pack-size (or MAX_AUTO_PACK) bounds a pack.
        devices, jobs, fits = [spec.train.device], o.jobs or 1, None
        packs = executor.make_packs(plan.todo, o.pack_size, jobs)
    else:
        devices = executor.resolve_devices(spec.train.device)
        jobs = o.jobs or executor.default_jobs(devices)
        fits = executor.memory_fit(devices)
        packs = executor.make_packs(plan.todo, o.pack_size, jobs, fits)
        if plan.todo:
            choice, packs = executor.choose(
                plan.todo, packs, devices, o.jobs, o.threads, o.pack_size, fits
            )
            jobs = choice.workers
    first = executor.make_packs(plan.pretrain_todo, o.pack_size, jobs, fits)
    dropped = executor.dropped_runs(plan.sweep_dir, spec) if o.force and replacing else []
    planned = Planned(
        spec, plan, packs, devices, jobs, retrained, dropped, o, pretrain_packs=first, choice=choice
    )
    return planned, replacing, submitter


def _submit(planned: Planned, submitter: Any, h: Hooks, result: SweepResult) -> None:
    from freebits_cli.sweep import cluster

    spec, plan, o = planned.spec, planned.plan, planned.options
    sub = cluster.submit(
        plan.sweep_dir,
        planned.packs,
        plan.grid_paths,
        spec.train.device,
        spec.slurm,
        o.executor,
        submitter,
    )
    result.submission = sub
    if h.submitted is not None:
        h.submitted(plan, sub)
    if not o.wait:
        return
    if h.watch is not None:
        h.watch(plan, sub)
    else:
        while not all(job.done() for job in sub.jobs):
            time.sleep(POLL_S)
    result.job_errors = cluster.job_errors(sub)


def _train_here(planned: Planned, out: Path, h: Hooks, result: SweepResult) -> None:
    """Train the plan in this process (and its workers); wait for runs another process holds,
    then train what it left."""
    from freebits_cli.engine import interrupt
    from freebits_cli.results import locks

    spec, o = planned.spec, planned.options
    plan, packs = planned.plan, planned.packs
    failures: list[str] = []
    choice = planned.choice
    with (
        interrupt.handling_signals(),
        _exporting(out, spec.name, o.log, h.warn) as committed,
        trainers.registered(choice.workers * choice.threads if choice else 0),
    ):
        if planned.pretrain_packs and not planned.on_cluster:  # the runs start from these
            first = replace(plan, grid_paths=())
            try:
                _train_packs(first, planned.pretrain_packs, planned, choice, h, failures, committed)
            except TooManyFailures as exc:
                result.stopped = str(exc)
                return
        while True:
            try:
                outcomes = _train_packs(plan, packs, planned, choice, h, failures, committed)
            except TooManyFailures as exc:
                result.stopped = str(exc)
                return
            result.outcomes += outcomes
            result.trained += sum(x.state == "failed" or not x.reason for x in outcomes)
            result.elsewhere += sum(x.reason == "already complete" for x in outcomes)
            busy = {
                x.run_id: x.reason.removeprefix("trained by ")
                for x in outcomes
                if x.state == "busy"
            }
            if not busy:
                break
            h.note(
                f"{len(busy)} run(s) are being trained by another process "
                f"({', '.join(sorted(set(busy.values())))}); waiting for them"
            )
            folders = [plan.sweep_dir / schema.RUNS_DIR / r for r in busy]
            locks.wait_until_free(folders, interrupt.check)
            # Read the folders again: the other process finished them, or died and left them.
            again = executor.plan(spec, out, shard=o.shard)
            plan = replace(again, runs=tuple(r for r in again.runs if r.run.run_id in busy))
            result.elsewhere += len(set(busy) - {r.run.run_id for r in plan.todo})
            if not plan.todo:
                break
            fits = executor.memory_fit(planned.devices)
            packs = executor.make_packs(plan.todo, o.pack_size, planned.jobs, fits)
            choice, packs = executor.choose(
                plan.todo, packs, planned.devices, o.jobs, o.threads, o.pack_size, fits
            )
    h.note(f"trained {result.trained} run(s) here; {result.elsewhere} finished by another process")


def _train_packs(
    plan: Plan,
    packs: Sequence[Pack],
    planned: Planned,
    choice: Choice | None,
    h: Hooks,
    failures: list[str],
    committed: Callable[[], None] | None,
) -> list[Outcome]:
    """Train `packs` with the caller's progress; stop once max_failures runs have failed."""
    limit = planned.options.max_failures

    def shown(callbacks: Callbacks) -> Callbacks:
        def on_pack(outcomes: Sequence[Outcome]) -> None:
            if callbacks.on_pack is not None:
                callbacks.on_pack(outcomes)
            if committed is not None:  # the pack's runs are finished (summaries written)
                committed()
            failures.extend(x.run_id for x in outcomes if x.state == "failed")
            if limit and len(failures) >= limit:
                raise TooManyFailures(
                    f"{len(failures)} run(s) failed (--max-failures {limit}); the runs not "
                    "yet trained are left for the next run of the same command"
                )

        def on_epoch(run_ids: Sequence[str], epoch: int, epochs: int) -> None:
            if callbacks.on_epoch is not None:
                callbacks.on_epoch(run_ids, epoch, epochs)
            if committed is not None:  # each epoch's rows are committed when on_epoch runs
                committed()

        return Callbacks(on_epoch=on_epoch, on_step=callbacks.on_step, on_pack=on_pack)

    progress = h.progress or _no_progress
    jobs, threads = (choice.workers, choice.threads) if choice else (planned.jobs, 0)
    # The share of the cores beside other trainers bounds a pack's threads in this process, and
    # the workers training at once unless --jobs asked for them.
    share = choice.cores if choice and (choice.workers == 1 or not choice.asked) else None
    with progress(packs, jobs) as callbacks:
        return executor.execute(
            plan, packs, planned.devices, jobs, shown(callbacks), threads, share
        )


@contextmanager
def _no_progress(_packs: Sequence[Pack], _jobs: int) -> Iterator[Callbacks]:
    yield Callbacks()


@contextmanager
def _exporting(
    out: Path, name: str, targets: Sequence[Any], warn: Callable[[str], None]
) -> Iterator[Callable[[], None] | None]:
    """With export targets: a background exporter, signalled after each committed epoch."""
    if not targets:
        yield None
        return
    from freebits_cli.export.live import LiveExport

    live = LiveExport(out, name, targets, warn)
    try:
        yield live.epoch_done
    finally:
        live.close()  # the last epochs and the finished runs
