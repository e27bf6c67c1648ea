"""`freebits sweep` on a cluster: the dry run's cost estimate, submitting the packs, and a live
table of the runs (read from their folders, never from the scheduler) until the jobs end."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import SpecError
from .tables import result_rows

#: Seconds between two looks at the run folders while waiting on submitted jobs.
WATCH_INTERVAL_S = 2.0
#: Seconds between two calls of squeue (it loads the cluster's controller: rarely).
SQUEUE_INTERVAL_S = 30.0
STATES = ("queued", "running", "done", "failed")


def print_estimate(say: Console, p: Any, pilot: bool) -> None:
    """The dry run's cost table of a `Planned` sweep (FLOPs, and a pilot step's rate)."""
    from freebits_cli.sweep import dryrun

    est, workers = dryrun.estimate_planned(p, pilot)
    table, total = dryrun.render(est, workers)
    say.print(table)
    say.print(total, highlight=False)


def watch(plan: Any, sub: Any, say: Console) -> None:
    """A live table of the sweep's runs, from the run folders, until every job has ended; on
    Slurm with squeue's reasons for the tasks still pending, and a stop (the jobs cancelled, one
    line naming the `slurm:` key) when a reason means a task can never start."""
    from rich.live import Live

    from freebits_cli.sweep import queue

    reasons: dict[str, str] = {}
    asked = -float("inf")

    def look() -> None:
        nonlocal reasons, asked
        if sub.executor != "slurm" or time.monotonic() - asked < SQUEUE_INTERVAL_S:
            return
        asked = time.monotonic()
        reasons = queue.pending_reasons(sub.job_ids)
        for job_id, reason in sorted(reasons.items()):
            never = queue.never_starts(reason)
            if never is not None:
                for job in sub.jobs:
                    job.cancel(check=False)
                key, why = never
                raise SpecError(
                    key,
                    f"job {job_id} can never start: squeue gives the reason {reason} ({why}); "
                    f"job {', '.join(sub.array_ids)} cancelled",
                )

    def table() -> Table:
        counts: dict[str, int] = {}
        for row in result_rows(plan):
            state = row["state"].split(" ")[0]  # "running (host/pid)" -> "running"
            state = "running" if state == "interrupted" else state
            state = "queued" if state == "pending" else state
            counts[state] = counts.get(state, 0) + 1
        view = Table(title=f"{plan.sweep_dir.name}: job {', '.join(sub.array_ids)}")
        for state in (*STATES, "pending because (squeue)"):
            view.add_column(state, justify="right" if state in STATES else "left")
        why = Counter(reasons.values())
        waiting = ", ".join(f"{r} ({n} task{'s' * (n > 1)})" for r, n in why.most_common())
        view.add_row(*(str(counts.get(s, 0)) for s in STATES), waiting or "-")
        return view

    look()
    try:
        with Live(table(), console=say, refresh_per_second=1, transient=False) as live:
            while not all(job.done() for job in sub.jobs):
                time.sleep(WATCH_INTERVAL_S)
                look()
                live.update(table())
            live.update(table())
    finally:
        say.print()  # the table's last line ends before anything else is said
