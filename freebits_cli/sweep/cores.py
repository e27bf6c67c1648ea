"""How many CPU cores a sweep may use, and how it spreads a pack's members over them.

The cores come from every limit the process lives under: its CPU affinity (`taskset`, cpusets,
Slurm's binding), a cgroup CPU quota (containers and Slurm's cgroups: `cpu.max` in cgroup v2,
`cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1), `SLURM_CPUS_PER_TASK`, a user's `OMP_NUM_THREADS`
or `--threads N`, and torch's own thread count where something in this process already set it.
Other freebits trainers on the machine (`trainers`) take their share of them.

On a CPU a pack's members run one by one (see `models.packing`), so its members can as well run in
worker processes of one thread each: every member then computes exactly as in a pack of one, on
one thread, and the cores share out whole members instead of the many small parallel regions of
one step. Intra-op threads wait for each other at the end of each region; when the OS gives one
of their cores to another process, the whole step waits (the usual OpenMP collapse on an
oversubscribed machine), while a one-thread worker only slows by its share. `choose` takes the
faster of the two from the cost model (`cost.cpu_timing`: pilot steps at one thread and at every
core in alternating rounds, and the measured start-up of a worker), never a constant.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freebits_cli.errors import SpecError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")  # which cgroup this process is in
#: OpenMP threads that find no work spin only briefly before they sleep: GNU OpenMP's (torch's
#: runtime on Linux) own count for cores it knows are oversubscribed, instead of its default
#: 300,000. Measured on 2 cores (docs/benchmarks.md): beside a 2-thread PyTorch job a 2-thread
#: pack 4× faster than with the default (20.6 against 86.9 s); quiet, a 2-thread training step
#: ~1.4× slower than with the default (16.6–19.4 against 11.8–12.3 ms), which the choice's pilot
#: measures, so a split's one-thread workers (no sibling thread to wait for) train instead. Passive
#: waits (0) were slower still quiet: the step's many small parallel regions each wake a thread.
SPIN_COUNT = ("GOMP_SPINCOUNT", "1000")
#: A user's choice of how OpenMP threads wait, which the spin count leaves alone.
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@dataclass(frozen=True)
class Cores:
    """The cores a sweep may use, and the limit that decided it (said in the plan line)."""

    count: int
    source: str  # affinity | cgroup quota | SLURM_CPUS_PER_TASK | OMP_NUM_THREADS | --threads | …
    others: int = 0  # other freebits trainers on this machine when they were counted
    limit: int = 0  # the cores before sharing with them (0: count)

    def unshared(self) -> Cores:
        return Cores(self.limit or self.count, self.source)


@dataclass(frozen=True)
class Choice:
    """How a CPU sweep trains: `workers` processes (1: this one) of `threads` threads each.

    `split`: the members of a pack are spread over the workers (a pack becomes one pack per
    member; on a CPU each member's numbers are those of a pack of one whatever its pack).
    `asked`: the workers are --jobs', so they all train at once, whatever the share of the cores
    beside other trainers (which otherwise leaves some waiting)."""

    workers: int
    threads: int  # 0: leave torch's thread count alone (GPU workers)
    cores: Cores
    split: bool = False
    asked: bool = False

    def describe(self) -> str:
        """`2 workers × 1 thread on 2 cores` (`1 process × …` when this process trains)."""

        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        who = n(self.workers, "worker") if self.workers > 1 else "1 process"
        threads = f" × {n(self.threads, 'thread')}" if self.threads else ""
        where = f" on {n(self.cores.count, 'core')}"
        if self.cores.others:
            where += f" (beside {n(self.cores.others, 'other freebits trainer')})"
        elif self.cores.source != "affinity":
            where += f" ({self.cores.source})"
        return who + threads + where


def brief_spin(env: MutableMapping[str, str] | None = None) -> None:
    """Make idle OpenMP threads spin briefly (SPIN_COUNT), unless the user chose how they wait.
    Effective only before the OpenMP runtime loads (before torch is imported) in the process whose
    environment this is: the CLI sets it first thing, and workers inherit it."""
    env = os.environ if env is None else env
    if not any(name in env for name in WAIT_SETTINGS):
        env[SPIN_COUNT[0]] = SPIN_COUNT[1]


# ------------------------------------------------------------------------------------------------
# The limits


def affinity() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip().split(",")[0]  # OMP_NUM_THREADS may be a list: outer level
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        return None  # the OpenMP runtime ignores a bad value too
    return value if value > 0 else None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and its v1 cpu controller's path (from /proc/self/cgroup)."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(base: Path, path: str) -> list[Path]:
    """`base/path` and each folder above it up to `base` (a quota anywhere above limits us)."""
    parts = [p for p in path.split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_quota(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The CPU quota of this process's cgroup in cores (the smallest along its path; cgroup v2
    `cpu.max` "QUOTA PERIOD", or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None: no quota."""
    root = CGROUP_ROOT if root is None else root
    v2, v1 = _cgroup_paths(PROC_CGROUP if proc_cgroup is None else proc_cgroup)
    quotas: list[float] = []
    if v2 is not None:
        for folder in _ancestors(root, v2):
            fields = (_read(folder / "cpu.max") or "").split()
            if len(fields) == 2 and fields[0] != "max":
                quotas.append(int(fields[0]) / int(fields[1]))
    if v1 is not None:
        for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            for folder in _ancestors(root / mount, v1):
                quota, period = (
                    _read(folder / "cpu.cfs_quota_us"),
                    _read(folder / "cpu.cfs_period_us"),
                )
                if quota and period and int(quota) > 0 and int(period) > 0:
                    quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def torch_threads() -> int | None:
    """torch's intra-op thread count, where torch is already loaded in this process (a user's
    `torch.set_num_threads` is a limit like OMP_NUM_THREADS); None before torch is imported."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def machine(
    threads: int = 0,
    env: Mapping[str, str] | None = None,
    cpus: int | None = None,
    quota: float | None = None,
) -> Cores:
    """The cores this process may use: the tightest of its limits (`threads`: `--threads`, which
    replaces OMP_NUM_THREADS and torch's count but not the machine's own limits)."""
    env = os.environ if env is None else env
    if threads < 0:
        raise SpecError("--threads", f"{threads} must be at least 1 (0: every core it may use)")
    limits = [(cpus if cpus is not None else affinity(), "affinity")]
    quota = cgroup_quota() if quota is None else quota
    if quota is not None:
        limits.append((max(1, math.ceil(quota - 1e-9)), "cgroup quota"))
    if (slurm := _positive_int(env, "SLURM_CPUS_PER_TASK")) is not None:
        limits.append((slurm, "SLURM_CPUS_PER_TASK"))
    if threads:
        limits.append((threads, "--threads"))
    elif (omp := _positive_int(env, "OMP_NUM_THREADS")) is not None:
        limits.append((omp, "OMP_NUM_THREADS"))
    elif (own := torch_threads()) is not None:
        limits.append((own, "torch threads"))
    count, source = min(limits, key=lambda item: item[0])  # the first of equals: affinity
    return Cores(max(1, count), source)


def shared(cores: Cores, others: Sequence[int]) -> Cores:
    """Our share of `cores` beside other freebits trainers using `others` cores each: what they
    leave free, and at least an equal share (they shrink to theirs at their next pack start)."""
    cores = cores.unshared()
    if not others:
        return cores
    free = cores.count - sum(others)
    fair = cores.count // (len(others) + 1)
    return Cores(max(1, free, fair), cores.source, len(others), cores.count)


# ------------------------------------------------------------------------------------------------
# The choice


@dataclass(frozen=True)
class Timing:
    """What the choice weighs, in seconds: the packs' work at one thread (each member's), how much
    faster every core makes one process (measured; below 1 on a busy machine), and what starting
    one worker costs (measured on this machine: spawn, imports, the data set)."""

    member_seconds: Sequence[float]  # one entry per member to train, at one thread
    speedup: float  # one process on every core, against one thread
    startup: float


def seconds_in_process(timing: Timing) -> float:
    return sum(timing.member_seconds) / max(timing.speedup, 1.0)  # one thread is always possible


def seconds_split(timing: Timing, workers: int) -> float:
    """`workers` one-thread workers pulling members: start-up, then the busiest worker's share
    (members handed out longest first, the usual greedy bound; the workers pull them in plan
    order, the same where a sweep's members cost alike)."""
    loads = [0.0] * workers
    for seconds in sorted(timing.member_seconds, reverse=True):
        loads[loads.index(min(loads))] += seconds
    return timing.startup + max(loads)


def choose(
    packs: Sequence[Sequence[Any]],
    cores: Cores,
    jobs: int,
    fixed_packs: bool,
    timing: Callable[[], Timing | None],
) -> Choice:
    """Workers and threads for CPU `packs`. `jobs` (from --jobs, 0: choose) keeps today's meaning:
    that many packs train at once, one worker each, sharing the cores. With `fixed_packs`
    (--pack-size given) a pack is not split, only packs are spread; `timing` is called only when
    there is a choice to make (it runs pilot steps)."""
    if jobs:
        workers = min(jobs, len(packs)) if len(packs) > 1 else 1
        return Choice(workers, max(1, cores.count // max(1, workers)), cores, asked=True)
    members = sum(len(p) for p in packs)
    most = min(cores.count, len(packs) if fixed_packs else members)
    in_process = Choice(1, cores.count, cores)
    if most < 2:
        return in_process
    t = timing()
    if t is None:  # too little work to pay a worker's start-up
        return in_process
    if fixed_packs:  # whole packs are what the workers pull
        each = iter(t.member_seconds)
        t = Timing([sum(next(each) for _ in p) for p in packs], t.speedup, t.startup)
    if t.speedup < 1.0:  # busy cores: one thread beats them in this process
        in_process = Choice(1, 1, cores)
    best, best_s = in_process, seconds_in_process(t)
    for workers in range(2, most + 1):
        seconds = seconds_split(t, workers)
        if seconds < best_s:
            best, best_s = Choice(workers, cores.count // workers, cores, not fixed_packs), seconds
    return best


# ------------------------------------------------------------------------------------------------
# Worker start-up: measured by the workers of this machine, remembered beside the registry


def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat), None where unknown: what
    this process's own start (interpreter, imports, data) took, a first guess at a worker's."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)


def startup_guess(measured: float | None) -> float:
    """A worker's start-up: the last one measured on this machine, else this process's own age
    (when that is unknown, a pessimistic 10 s, so nothing is split on a guess)."""
    if measured is not None:
        return measured
    age = process_age()
    return age if age is not None else 10.0
