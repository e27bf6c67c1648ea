"""The `freebits` command line: the only module that prints. Heavy imports happen inside commands."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import FreebitsError, ResultsError, SpecError

#: Seconds between two looks at the run folders while waiting on submitted jobs.
WATCH_INTERVAL_S = 2.0

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train grids of VAEs over free-bits thresholds λ and KL-annealing schedules; report them.",
)
# In a terminal tables fit its width; in a pipe or a cluster log nothing is cut (Rich would
# otherwise assume 80 columns and truncate run ids).
_WIDE = 1000
console = Console(width=None if sys.stdout.isatty() else _WIDE)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)


def _version(value: bool) -> None:
    if not value:
        return
    import torch

    from . import __version__

    cuda = torch.version.cuda or "none"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    console.print(
        f"freebits {__version__}, torch {torch.__version__}, CUDA {cuda} ({gpus} GPU(s) visible)",
        highlight=False,
    )
    raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Versions of freebits, torch, CUDA.",
    ),
) -> None:
    """Train grids of VAEs over free-bits thresholds λ and KL-annealing schedules; report them."""


def _fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guarded(action: Callable[[], int]) -> None:
    """Run a command body; domain errors become one line and an exit code, never a traceback."""
    try:
        code = action()
    except FreebitsError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; completed epochs are saved, run the same command again to resume", 130)
    except Exception as exc:
        if os.environ.get("FREEBITS_DEBUG"):
            raise
        _fail(f"{exc.__class__.__name__}: {exc} (set FREEBITS_DEBUG=1 for a traceback)", 1)
    else:
        raise typer.Exit(code)


def _list_flag(name: str, text: str | None) -> list[Any] | None:
    import yaml

    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise SpecError(name, f"{text!r} has an empty item; use a comma list like 0,0.5,1")
    try:
        return [yaml.safe_load(item) for item in items]
    except yaml.YAMLError:
        raise SpecError(name, f"cannot parse {text!r}; use a comma list like 0,0.5,1") from None


def _overrides(
    lambdas: str | None,
    anneal: str | None,
    seeds: str | None,
    modes: str | None,
    singles: dict[str, Any],
    sets: Sequence[str],
) -> list[tuple[str, Any]]:
    from .spec_file import parse_override

    out: list[tuple[str, Any]] = []
    for flag, path, text in (
        ("--lambdas", "grid.lambda", lambdas),
        ("--anneal", "grid.anneal", anneal),
        ("--seeds", "grid.seed", seeds),
        ("--free-bits-mode", "grid.mode", modes),
    ):
        values = _list_flag(flag, text)
        if values is not None:
            out.append((path, values))
    out += [(path, value) for path, value in singles.items() if value is not None]
    out += [parse_override(text) for text in sets]
    return out


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
        None, "--dataset", help="digits, mnist, fashion-mnist or FILE.npz."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Folder with the raw IDX files."),
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
    force: bool = typer.Option(False, "--force", help="Re-run runs that are already complete."),
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
) -> None:
    """Train every run of a sweep not yet complete, then show the results table."""

    def body() -> int:
        from .spec_file import build_spec

        singles = {
            "train.epochs": epochs,
            "dataset.name": dataset,
            "dataset.data_dir": data_dir,
            "model.latent_dim": latent_dim,
            "train.device": device,
            "name": name,
        }
        overrides = _overrides(lambdas, anneal, seeds, free_bits_mode, singles, sets)
        spec = build_spec(spec_file, overrides)
        if executor_kind not in ("local", "slurm", "submitit-local"):
            raise SpecError(
                "--executor", f"{executor_kind!r} is not local, slurm or submitit-local"
            )
        options = SweepOptions(
            jobs, pack_size, shard, dry_run, force, executor_kind, no_wait, not no_pilot, json_lines
        )
        return _run_sweep(spec, out, options)

    _guarded(body)


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


def _run_sweep(spec: Any, out: Path, o: SweepOptions) -> int:
    from . import executor, interrupt

    say = err_console if o.json_lines else console
    plan = executor.plan(spec, out, force=o.force, shard=o.shard)
    todo = plan.todo
    on_cluster = o.executor != "local"
    submitter = None
    if on_cluster and not o.dry_run and todo:
        from .cluster import LOG_DIR, make_executor

        # Options, submitit and sbatch are checked before anything is written.
        submitter = make_executor(o.executor, spec.slurm, spec.name, plan.sweep_dir / LOG_DIR)
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
    if o.dry_run:
        say.print(_plan_table(plan))
        _print_estimate(say, spec, plan, packs, devices, jobs, o)
        return 0
    if not todo:
        say.print("nothing to train: every run is complete (use --force to re-run)")
    elif on_cluster:
        executor.check_ready(plan, devices if devices[0] != "auto" else ["cuda"])
        executor.prepare(plan, spec)
        code = _submit(spec, plan, packs, o, submitter)
        if code is not None:
            return code
    else:
        executor.check_ready(plan, devices)
        executor.prepare(plan, spec)
        with interrupt.handling_signals():
            _train_with_progress(plan, spec.train.device, o.pack_size, jobs, len(todo), say)
    rows = _result_rows(plan)
    _print_rows(rows, o.json_lines)
    failed = [r for r in rows if r["state"] == "failed"]
    for row in failed:
        err_console.print(f"[red]failed[/] {row['run_id']}: {row['reason']}", highlight=False)
    return 1 if failed else 0


def _print_rows(rows: Sequence[dict[str, Any]], json_lines: bool) -> None:
    if json_lines:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
    else:
        console.print(_results_table(rows))


def _print_estimate(
    say: Console, spec: Any, plan: Any, packs: Any, devices: Sequence[str], jobs: int, o: Any
) -> None:
    from . import dryrun, executor

    if o.executor == "local":
        where = dryrun.where_local(len(packs), devices, jobs, o.shard)
        pilot_device, workers = devices[0], jobs
    else:
        where = dryrun.where_slurm(len(packs), spec.slurm.max_array_size)
        pilot_device = executor.resolve_devices("auto")[0]
        workers = spec.slurm.array_parallelism
    est = dryrun.estimate(
        packs, where, executor.dataset, pilot_device if o.pilot else None, workers
    )
    table, total = dryrun.render(est, workers)
    say.print(table)
    say.print(total, highlight=False)


def _submit(spec: Any, plan: Any, packs: Any, o: SweepOptions, submitter: Any) -> int | None:
    """Submit the packs; with --no-wait exit after saying how to follow them, else watch them."""
    from . import cluster

    say = err_console if o.json_lines else console
    sub = cluster.submit(
        plan.sweep_dir, packs, plan.grid_paths, spec.train.device, spec.slurm, o.executor, submitter
    )
    say.print(
        f"submitted {len(sub.jobs)} task(s) as job {', '.join(sub.array_ids)}; "
        f"logs: {sub.log_dir}; follow with: freebits status {plan.sweep_dir}",
        highlight=False,
        soft_wrap=True,
    )
    if o.no_wait:
        return 0
    _watch(plan, sub, say)
    errors = cluster.job_errors(sub)
    for line in errors:
        err_console.print(f"[red]job failed[/] {line}", highlight=False, soft_wrap=True)
    if errors:
        _print_rows(_result_rows(plan), o.json_lines)
        return 1
    return None


def _watch(plan: Any, sub: Any, say: Console) -> None:
    """A live table of the sweep's runs, from the run folders, until every job has ended."""
    from rich.live import Live

    def table() -> Table:
        counts: dict[str, int] = {}
        for row in _result_rows(plan):
            state = "running" if row["state"] == "interrupted" else row["state"]
            state = "queued" if state == "pending" else state
            counts[state] = counts.get(state, 0) + 1
        view = Table(title=f"{plan.sweep_dir.name}: job {', '.join(sub.array_ids)}")
        for state in ("queued", "running", "done", "failed"):
            view.add_column(state, justify="right")
        view.add_row(*(str(counts.get(s, 0)) for s in ("queued", "running", "done", "failed")))
        return view

    with Live(table(), console=say, refresh_per_second=1, transient=False) as live:
        while not all(job.done() for job in sub.jobs):
            time.sleep(WATCH_INTERVAL_S)
            live.update(table())
        live.update(table())
    say.print()


def _train_with_progress(
    plan: Any, device: str, pack_size: int, jobs: int, total: int, say: Console
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from . import executor

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=say, transient=False) as progress:
        runs_task = progress.add_task("runs done", total=total)
        epoch_task = progress.add_task("pack epoch", total=None, visible=jobs == 1)

        def on_epoch(run_ids: Sequence[str], epoch: int, epochs: int) -> None:
            progress.update(
                epoch_task,
                completed=epoch,
                total=epochs,
                description=f"pack of {len(run_ids)}: epoch",
            )

        def on_pack(outcomes: Sequence[Any]) -> None:
            progress.advance(runs_task, len(outcomes))

        executor.execute(plan, device, pack_size, jobs, on_epoch, on_pack)


def _result_rows(plan: Any) -> list[dict[str, Any]]:
    from . import storage

    rows = []
    for item in plan.runs:
        summary = storage.read_json(item.folder / storage.SUMMARY)
        failed = storage.read_json(item.folder / storage.FAILED)
        state = "done" if summary else "failed" if failed else storage.run_state(item.folder)
        rows.append(
            {
                "run_id": item.run.run_id,
                "lambda": item.run.free_bits.lam,
                "mode": item.run.free_bits.mode,
                "anneal": item.run.anneal.schedule,
                "seed": item.run.train.seed,
                "state": state,
                **(summary or {}),
                "reason": (failed or {}).get("reason", ""),
            }
        )
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _results_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="test-set results, nats per example (AU: active units)")
    for column in (
        "λ",
        "mode",
        "anneal",
        "seed",
        "ELBO",
        "KL",
        "AU",
        "IWAE NLL",
        "MI",
        "state",
    ):
        table.add_column(column, justify="left" if column in ("mode", "anneal") else "right")
    for r in sorted(rows, key=lambda r: (r["anneal"], r["mode"], r["lambda"], r["seed"])):
        table.add_row(
            f"{r['lambda']:g}",
            r["mode"],
            r["anneal"],
            str(r["seed"]),
            _fmt(r.get("test_elbo")),
            _fmt(r.get("test_kl")),
            _fmt(r.get("active_units")),
            _fmt(r.get("test_iwae_nll")),
            _fmt(r.get("test_mi"), 3),
            r["state"],
        )
    return table


def _plan_table(plan: Any) -> Table:
    table = Table(title="runs")
    extra = [
        p
        for p in plan.grid_paths
        if p not in ("free_bits.lambda", "anneal.schedule", "train.seed", "free_bits.mode")
    ]
    for column in ("run id", "λ", "mode", "schedule", "seed", *extra, "state"):
        table.add_column(column)
    for item in plan.runs:
        run = item.run
        setting = run.setting(extra)
        state = item.state + (f" (epoch {item.start_epoch})" if item.start_epoch else "")
        table.add_row(
            run.run_id,
            f"{run.free_bits.lam:g}",
            run.free_bits.mode,
            run.anneal.schedule,
            str(run.train.seed),
            *(str(setting[p]) for p in extra),
            state,
        )
    return table


@app.command()
def status(
    results_dir: Path = typer.Argument(..., help="Results folder (or one sweep's folder)."),
    json_lines: bool = typer.Option(
        False, "--json", help="One JSON object per run (sweep, run_id, state, epochs, metrics)."
    ),
) -> None:
    """A table of runs: done, failed (with reason), interrupted, pending, queued (submitted)."""

    def body() -> int:
        from . import executor
        from .cluster import submitted
        from .spec_file import build_spec

        if not results_dir.is_dir():
            raise ResultsError(f"{results_dir}: no such folder")
        sweeps = (
            [results_dir]
            if (results_dir / "spec.yaml").exists()
            else sorted(p.parent for p in results_dir.glob("*/spec.yaml"))
        )
        if not sweeps:
            raise ResultsError(f"{results_dir}: no sweep found (no */spec.yaml)")
        table = Table(title=f"runs under {results_dir}")
        for column in (
            "sweep",
            "run id",
            "λ",
            "schedule",
            "seed",
            "state",
            "epochs",
            "job",
            "reason",
        ):
            table.add_column(column)
        counts: dict[str, int] = {}
        job_lines = []
        for sweep_dir in sweeps:
            spec = build_spec(sweep_dir / "spec.yaml")
            plan = executor.plan(spec, sweep_dir.parent)
            job_ids, owner = submitted(sweep_dir)
            if job_ids:
                arrays: dict[str, int] = {}
                for job_id in job_ids:  # 123_4 is task 4 of array 123
                    arrays[job_id.split("_")[0]] = arrays.get(job_id.split("_")[0], 0) + 1
                listed = ", ".join(f"{a} ({n} task{'s' * (n > 1)})" for a, n in arrays.items())
                job_lines.append(f"{sweep_dir.name}: submitted as job {listed}")
            for row, item in zip(_result_rows(plan), plan.runs, strict=True):
                if row["state"] == "pending" and row["run_id"] in owner:
                    row["state"] = "queued"  # submitted, not started
                counts[row["state"]] = counts.get(row["state"], 0) + 1
                row["sweep"] = sweep_dir.name
                row["epochs_done"] = _epochs_done(item.folder)
                row["job"] = owner.get(row["run_id"], "")
                if json_lines:
                    typer.echo(json.dumps(row, default=str))
                    continue
                table.add_row(
                    sweep_dir.name,
                    row["run_id"],
                    f"{row['lambda']:g}",
                    row["anneal"],
                    str(row["seed"]),
                    row["state"],
                    row["epochs_done"],
                    row["job"],
                    row["reason"],
                )
        if json_lines:
            return 0
        console.print(table)
        for line in job_lines:
            console.print(line, highlight=False, soft_wrap=True)
        console.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        return 0

    _guarded(body)


def _epochs_done(folder: Path) -> str:
    from . import storage

    config = storage.read_json(folder / storage.CONFIG) or {}
    total = config.get("config", {}).get("train", {}).get("epochs", "?")
    try:
        done = max(0, len((folder / storage.METRICS).read_text().splitlines()) - 1)
    except OSError:
        done = 0
    return f"{done}/{total}"


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="Results folder: every run below it is reported."),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder (default RESULTS_DIR/report)."
    ),
    formats: str = typer.Option("png", "--format", help="Figure formats: png,svg,pdf."),
    keep_share: float = typer.Option(
        0.9, "--keep-share", help="Share of units to keep active for the λ recommendation."
    ),
) -> None:
    """Figures, tables and index.html from the files of every run below RESULTS_DIR."""

    def body() -> int:
        from .report import build_report, by_setting_rows

        started = time.perf_counter()
        fmt_list = [f.strip() for f in formats.split(",") if f.strip()]
        result = build_report(results_dir, out, fmt_list, keep_share)
        for warning in result.warnings:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
        headers, rows = by_setting_rows(result.by_setting)
        table = Table(title="by setting (mean ± 95% CI over seeds, nats)")
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print(result.recommendation, highlight=False)
        counts = ", ".join(f"{n} {state}" for state, n in result.counts.items())
        console.print(
            f"{counts}; report written in {time.perf_counter() - started:.1f} s: "
            f"{result.index_html}",
            highlight=False,
            soft_wrap=True,
        )
        return 0

    _guarded(body)


def main() -> None:  # pragma: no cover - console entry point alias
    app(sys.argv[1:])
