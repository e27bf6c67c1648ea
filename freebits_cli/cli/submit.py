"""`freebits sweep` on a cluster: the dry run's cost estimate, submitting the packs, and a live
table of the runs (read from their folders, never from the scheduler) until the jobs end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from .app import console, err_console
from .tables import print_rows, result_rows

#: Seconds between two looks at the run folders while waiting on submitted jobs.
WATCH_INTERVAL_S = 2.0


def print_estimate(
    say: Console, spec: Any, plan: Any, packs: Any, devices: Sequence[str], jobs: int, o: Any
) -> None:
    from .. import dryrun, executor

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


def submit(spec: Any, plan: Any, packs: Any, o: Any, submitter: Any) -> int | None:
    """Submit the packs; with --no-wait exit after saying how to follow them, else watch them."""
    from .. import cluster

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
        print_rows(result_rows(plan), o.json_lines)
        return 1
    return None


def _watch(plan: Any, sub: Any, say: Console) -> None:
    """A live table of the sweep's runs, from the run folders, until every job has ended."""
    from rich.live import Live

    def table() -> Table:
        counts: dict[str, int] = {}
        for row in result_rows(plan):
            state = row["state"].split(" ")[0]  # "running (host/pid)" -> "running"
            state = "running" if state == "interrupted" else state
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
