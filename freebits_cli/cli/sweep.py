"""`freebits sweep`: parse the flags into a spec, call `run_sweep`, and show what it says."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from freebits_cli import schema

from . import announce
from .app import app, console, err_console, guarded, labelled, warn
from .flags import flag_overrides
from .submit import print_estimate, watch
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
        None, "--anneal", help="KL schedules: none,constant,linear,sigmoid,cyclical."
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
        None,
        "--free-bits-mode",
        help="batch, example, total, group, example_total (comma list sweeps).",
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda, cuda:N or cuda:0,cuda:1."
    ),
    jobs: int = typer.Option(
        0,
        "--jobs",
        min=0,
        help="Packs trained at once, one worker per device slot (0: one per GPU; on the CPU, "
        "chosen from the cores).",
    ),
    threads: int = typer.Option(
        0,
        "--threads",
        min=0,
        help="CPU threads the sweep may use in all (0: every core it may use; the default "
        "honours OMP_NUM_THREADS, CPU affinity, cgroup quotas and SLURM_CPUS_PER_TASK).",
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
        from freebits_cli.sweep.run import SweepOptions, run_sweep

        singles = {
            "train.epochs": epochs,
            "dataset.name": dataset,
            "dataset.data_dir": data_dir,
            "model.latent_dim": latent_dim,
            "train.device": device,
            "name": name,
        }
        overrides, notes = flag_overrides(lambdas, anneal, seeds, free_bits_mode, singles, sets)
        spec = build_spec(spec_file, overrides)
        options = SweepOptions(
            jobs=jobs,
            threads=threads,
            pack_size=pack_size,
            shard=shard,
            dry_run=dry_run,
            force=force,
            executor=executor_kind,
            wait=not no_wait,
            max_failures=max_failures,
            log=_log_targets(log),
        )
        say = err_console if json_lines else console
        shown = Shown(say, yes=yes, pilot=not no_pilot, notes=notes)
        result = run_sweep(spec, out, options, shown.hooks())
        if dry_run or (result.submission is not None and no_wait):
            return 0
        for line in result.job_errors:
            err_console.print(labelled("job failed", "red", line), highlight=False, soft_wrap=True)
        rows = result_rows(result.plan)
        print_rows(rows, json_lines)
        for row in rows:
            if row["state"] == "failed":
                err_console.print(
                    labelled("failed", "red", f"{row['run_id']}: {row['reason']}"),
                    highlight=False,
                )
        if result.stopped:
            err_console.print(labelled("stopped:", "red", result.stopped), highlight=False)
        return result.exit_code

    guarded(body)


def _log_targets(log: str | None) -> list[Any]:
    """--log's export targets, checked (and their extras) before anything trains."""
    if log is None:
        return []
    from ..export import parse_targets

    return parse_targets(log.split(","), "--log")


@dataclass
class Shown:
    """How `freebits sweep` shows a sweep: `run_sweep`'s hooks, printing on `say`."""

    say: Console
    yes: bool = False  # --yes: delete without asking
    pilot: bool = True  # the dry run's estimate measures a pilot step
    # What the flags dropped or overrode; said with the plan (a spec or plan that fails shows
    # only its error lines).
    notes: Sequence[str] = ()

    def hooks(self) -> Any:
        from freebits_cli.sweep.run import Hooks

        return Hooks(
            planned=self.planned,
            warn=warn,
            note=lambda line: self.say.print(line, highlight=False),
            progress=self.progress,
            submitted=self.submitted,
            watch=lambda plan, sub: watch(plan, sub, self.say),
        )

    def planned(self, p: Any) -> None:
        """The plan line, resumes, shared runs, --force's deletions; the dry run's tables."""
        plan, o = p.plan, p.options
        for note in self.notes:
            self.say.print(note, highlight=False, soft_wrap=True)
        how = f" on {p.choice.describe()}" if p.choice is not None and p.choice.threads else ""
        line = Text.assemble(
            "sweep ",
            (p.spec.name, "bold"),
            f": {len(plan.runs)} runs, {len(plan.todo)} to train in {len(p.packs)} pack(s){how} "
            f"-> {plan.sweep_dir}",
        )
        self.say.print(line, highlight=False)
        if plan.pretrainings:
            todo = len(plan.pretrain_todo)
            self.say.print(
                f"{announce.plural(len(plan.pretrainings), 'pretraining')} the runs start from "
                f"({todo} to train first) -> {plan.sweep_dir / schema.PRETRAIN_DIR}",
                highlight=False,
            )
        shared = announce.shared_plain_runs(p.spec)
        for line in [*announce.resume_lines(plan.todo), *([shared] if shared else [])]:
            self.say.print(line, highlight=False)
        if o.force:
            announce.force_deletions(self.say, p.retrained, p.dropped, o.dry_run, self.yes)
        if o.dry_run:
            self.say.print(plan_table(plan))
            print_estimate(self.say, p, self.pilot)

    @contextmanager
    def progress(self, packs: Sequence[Any], jobs: int) -> Iterator[Any]:
        from freebits_cli.sweep.progress import SweepProgress, pack_work

        from .progress import ProgressView, callbacks

        view = ProgressView(self.say, SweepProgress(pack_work(packs), jobs))
        with view.showing():
            yield callbacks(view)

    def submitted(self, plan: Any, sub: Any) -> None:
        self.say.print(
            f"submitted {len(sub.jobs)} task(s) as job {', '.join(sub.array_ids)}; "
            f"logs: {sub.log_dir}; follow with: freebits status {plan.sweep_dir}",
            highlight=False,
            soft_wrap=True,
        )
