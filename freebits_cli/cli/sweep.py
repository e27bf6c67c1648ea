"""`freebits sweep`: build the spec, plan, train here (with progress) or submit to a cluster."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ..errors import SpecError
from . import announce
from .app import app, console, err_console, guarded, warn
from .flags import flag_overrides
from .submit import print_estimate, submit
from .tables import plan_table, print_rows, result_rows


@app.command()
def sweep(
    spec_file: Path | None = typer.Argument(
        None, help="YAML sweep spec (default: the built-in sweep on digits)."
    ),
    lambdas: str | None = typer.Option(
        None, "--lambdas", help="Free-bits thresholds λ in nats, e.g. 0,0.1,0.5,1,2."
    ),
    anneal: str | None = typer.Option(
        None, "--anneal", help="KL schedules: none,linear,sigmoid,cyclical."
    ),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs per run."),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="digits, mnist, fashion-mnist, cifar10, text (a folder: --data-dir) or FILE.npz.",
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Folder holding the data set's files."
    ),
    latent_dim: int | None = typer.Option(None, "--latent-dim", help="Latent dimensions D."),
    free_bits_mode: str | None = typer.Option(
        None, "--free-bits-mode", help="batch, example, total, group (comma list sweeps)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda, cuda:N or cuda:0,cuda:1."
    ),
    jobs: int = typer.Option(
        0,
        "--jobs",
        min=0,
        help="Packs trained at once, one worker per device slot (0: one per GPU, 1 on the CPU).",
    ),
    pack_size: int = typer.Option(
        0, "--pack-size", min=0, help="Runs per batched model (0: auto)."
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="Train only shard I of N (I/N) of the runs."
    ),
    out: Path = typer.Option(Path("results"), "--out", help="Results folder."),
    name: str | None = typer.Option(None, "--name", help="Sweep name (folder under --out)."),
    sets: list[str] = typer.Option(
        [], "--set", help="Override any field: key.path=value (repeatable)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the runs, train nothing."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Re-run runs that are already complete; with a changed spec, replace the sweep.",
    ),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="With --force: delete without asking, even on a terminal."
    ),
    max_failures: int = typer.Option(
        0, "--max-failures", min=0, help="Stop once this many runs have failed (0: never)."
    ),
    executor_kind: str = typer.Option(
        "local", "--executor", help="local, slurm (a job array), or submitit-local."
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="With a cluster executor: submit, print the job ids, exit."
    ),
    no_pilot: bool = typer.Option(
        False, "--no-pilot", help="With --dry-run: no measured pilot step, FLOPs only."
    ),
    json_lines: bool = typer.Option(
        False, "--json", help="Print the results table as JSON lines (other output to stderr)."
    ),
    log: str | None = typer.Option(
        None,
        "--log",
        help="Export while training: tensorboard[=DIR], mlflow[=URI] or both, comma-separated "
        "(as freebits export; default places under --out).",
    ),
) -> None:
    """Train every run of a sweep not yet complete, then show the results table."""

    def body() -> int:
        from freebits_cli.spec.files import build_spec

        singles = {
            "train.epochs": epochs,
            "dataset.name": dataset,
            "dataset.data_dir": data_dir,
            "model.latent_dim": latent_dim,
            "train.device": device,
            "name": name,
        }
        overrides = flag_overrides(lambdas, anneal, seeds, free_bits_mode, singles, sets)
        spec = build_spec(spec_file, overrides)
        if executor_kind not in ("local", "slurm", "submitit-local"):
            raise SpecError(
                "--executor", f"{executor_kind!r} is not local, slurm or submitit-local"
            )
        targets = _log_targets(log, executor_kind)
        options = SweepOptions(
            jobs,
            pack_size,
            shard,
            dry_run,
            force,
            executor_kind,
            no_wait,
            not no_pilot,
            json_lines,
            max_failures,
            targets,
            yes,
        )
        return _run_sweep(spec, out, options)

    guarded(body)


class _TooManyFailures(Exception):
    pass


@dataclass(frozen=True)
class SweepOptions:
    jobs: int
    pack_size: int
    shard: str | None
    dry_run: bool
    force: bool
    executor: str
    no_wait: bool
    pilot: bool
    json_lines: bool
    max_failures: int = 0
    log: Sequence[Any] = ()  # export targets for --log
    yes: bool = False


def _log_targets(log: str | None, executor_kind: str) -> list[Any]:
    """--log's export targets, checked (and their extras) before anything trains."""
    if log is None:
        return []
    if executor_kind != "local":
        raise SpecError("--log", "exports as a local sweep trains; after cluster jobs finish, "
                        "run freebits export on the results")  # fmt: skip
    from ..export import parse_targets

    return parse_targets(log.split(","), "--log")


def _run_sweep(spec: Any, out: Path, o: SweepOptions) -> int:
    from freebits_cli.results import storage, sweep_folder
    from freebits_cli.sweep import executor

    say = err_console if o.json_lines else console
    sweep_dir = storage.sweep_dir(out, spec.name)
    replace = False
    try:
        sweep_folder.check_unchanged(sweep_dir, spec)
    except SpecError:
        if not o.force:
            raise
        replace = True  # --force with another spec: this spec replaces the sweep
    plan = executor.plan(spec, out, shard=o.shard)
    retrained = [r.run.run_id for r in plan.runs if r.state == "done"] if o.force else []
    if o.force:
        plan = executor.plan(spec, out, force=True, shard=o.shard)
    todo = plan.todo
    on_cluster = o.executor != "local"
    submitter = None
    if on_cluster and not o.dry_run and todo:
        from freebits_cli.sweep.cluster import LOG_DIR, make_executor

        # Options, submitit and sbatch are checked before anything is written.
        submitter = make_executor(
            o.executor, spec.slurm, spec.name, plan.sweep_dir / LOG_DIR, spec.train.device
        )
    if on_cluster:  # the nodes' memory is not known here: --pack-size (or MAX_AUTO_PACK) bounds it
        devices = [spec.train.device]
        jobs = o.jobs or 1
        packs = executor.make_packs(todo, o.pack_size, jobs)
    else:
        devices = executor.resolve_devices(spec.train.device)
        jobs = o.jobs or executor.default_jobs(devices)
        packs = executor.make_packs(todo, o.pack_size, jobs, executor.memory_fit(devices))
    say.print(
        f"sweep [bold]{spec.name}[/]: {len(plan.runs)} runs, {len(todo)} to train "
        f"in {len(packs)} pack(s) -> {plan.sweep_dir}",
        highlight=False,
    )
    shared = announce.shared_plain_runs(spec)
    for line in [*announce.resume_lines(todo), *([shared] if shared else [])]:
        say.print(line, highlight=False)
    for warning in plan.warnings:
        warn(warning)
    if o.force:
        dropped = executor.dropped_runs(plan.sweep_dir, spec) if replace else []
        announce.force_deletions(say, retrained, dropped, o.dry_run, o.yes)
    if o.dry_run:
        say.print(plan_table(plan))
        print_estimate(say, spec, plan, packs, devices, jobs, o)
        return 0
    stopped = False
    if not todo:
        say.print("nothing to train: every run is complete (use --force to re-run)")
    elif on_cluster:
        for note in executor.check_ready(plan, devices if devices[0] != "auto" else ["cuda"]):
            warn(note)
        executor.prepare(plan, spec if replace else sweep_folder.grown(sweep_dir, spec), replace)
        code = submit(spec, plan, packs, o, submitter)
        if code is not None:
            return code
    else:
        for note in executor.check_ready(plan, devices):
            warn(note)
        executor.prepare(plan, spec if replace else sweep_folder.grown(sweep_dir, spec), replace)
        stopped = _train_logged(spec, out, plan, jobs, o, say)
    rows = result_rows(executor.plan(spec, out, shard=o.shard))  # every run, as the files say
    print_rows(rows, o.json_lines)
    failed = [r for r in rows if r["state"] == "failed"]
    for row in failed:
        err_console.print(f"[red]failed[/] {row['run_id']}: {row['reason']}", highlight=False)
    return 1 if failed or stopped else 0


def _train_logged(
    spec: Any, out: Path, plan: Any, jobs: int, o: SweepOptions, say: Console
) -> bool:
    """_train_here, exporting (--log) after each committed epoch from a background thread."""
    if not o.log:
        return _train_here(spec, out, plan, jobs, o, say)
    from ..export.live import LiveExport

    live = LiveExport(out, spec.name, o.log, warn)
    try:
        return _train_here(spec, out, plan, jobs, o, say, live.epoch_done)
    finally:
        live.close()  # the last epochs and the finished runs


def _train_here(
    spec: Any,
    out: Path,
    plan: Any,
    jobs: int,
    o: SweepOptions,
    say: Console,
    after_epoch: Callable[[], None] | None = None,
) -> bool:
    """Train the plan in this process (and its workers); wait for runs another process holds.
    Returns True when the sweep stopped early (--max-failures)."""
    from dataclasses import replace as replaced

    from freebits_cli.engine import interrupt
    from freebits_cli.results import locks
    from freebits_cli.sweep import executor

    trained, elsewhere, failures = 0, 0, []
    with interrupt.handling_signals():
        while True:
            try:
                outcomes = _train_with_progress(
                    plan,
                    spec.train.device,
                    o.pack_size,
                    jobs,
                    o.max_failures,
                    failures,
                    say,
                    after_epoch,
                )
            except _TooManyFailures as exc:
                err_console.print(f"[red]stopped:[/] {exc}", highlight=False)
                return True
            trained += sum(x.state == "failed" or not x.reason for x in outcomes)
            elsewhere += sum(x.reason == "already complete" for x in outcomes)
            busy = {
                x.run_id: x.reason.removeprefix("trained by ")
                for x in outcomes
                if x.state == "busy"
            }
            if not busy:
                break
            say.print(
                f"{len(busy)} run(s) are being trained by another process "
                f"({', '.join(sorted(set(busy.values())))}); waiting for them",
                highlight=False,
            )
            locks.wait_until_free([plan.sweep_dir / "runs" / r for r in busy], interrupt.check)
            # Read the folders again: the other process finished them, or died and left them.
            again = executor.plan(spec, out, shard=o.shard)
            plan = replaced(again, runs=tuple(r for r in again.runs if r.run.run_id in busy))
            elsewhere += len(set(busy) - {r.run.run_id for r in plan.todo})
            if not plan.todo:
                break
    say.print(f"trained {trained} run(s) here; {elsewhere} finished by another process")
    return False


def _train_with_progress(
    plan: Any,
    device: str,
    pack_size: int,
    jobs: int,
    max_failures: int,
    failed: list[str],
    say: Console,
    after_epoch: Callable[[], None] | None = None,
) -> list[Any]:
    """Train with progress on `say` (stderr under --json: stdout holds only JSON)."""
    from freebits_cli.sweep import executor
    from freebits_cli.sweep.progress import SweepProgress, pack_work

    from .progress import ProgressView, callbacks

    devices = executor.resolve_devices(device)
    workers = jobs or executor.default_jobs(devices)
    packs = executor.make_packs(plan.todo, pack_size, workers, executor.memory_fit(devices))
    view = ProgressView(say, SweepProgress(pack_work(packs), workers))

    def on_pack(outcomes: Sequence[Any]) -> None:
        if after_epoch is not None:  # --log: the pack's runs are finished (summaries written)
            after_epoch()
        failed.extend(o.run_id for o in outcomes if o.state == "failed")
        if max_failures and len(failed) >= max_failures:
            raise _TooManyFailures(
                f"{len(failed)} run(s) failed (--max-failures {max_failures}); the runs not "
                "yet trained are left for the next run of the same command"
            )

    hooks = callbacks(view, on_pack)
    if after_epoch is not None:  # --log: each epoch's rows are committed when on_epoch runs
        shown = hooks["on_epoch"]

        def on_epoch(run_ids: Sequence[str], epoch: int, epochs: int) -> None:
            shown(run_ids, epoch, epochs)
            after_epoch()

        hooks["on_epoch"] = on_epoch
    with view.showing():
        return executor.execute(plan, device, pack_size, jobs, **hooks)
