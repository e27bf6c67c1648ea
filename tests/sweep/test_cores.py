"""The cores a sweep may use, how it spreads a pack's members over them, and the trainer registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sweeps
from test_concurrency import COMMAND, ENV, assert_clean_csvs, lone_sweep, results, spec

from freebits_cli.errors import SpecError
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import cores, cost, executor, trainers
from freebits_cli.sweep.cores import Choice, Cores, Timing

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry of freebits trainers of the test's own (in the runtime folder it names)."""
    folder = tmp_path / "runtime"
    folder.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A faked machine: `machine(cpus, quota)` sets the affinity and the cgroup quota."""

    def fake(cpus: int, quota: float | None = None) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
        monkeypatch.setattr(cores, "cgroup_quota", lambda: quota)
        monkeypatch.setattr(cores, "torch_threads", lambda: None)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's own one thread

    return fake


# ------------------------------------------------------------------------------------------------
# The limits


def test_the_tightest_limit_decides(machine: Any) -> None:
    machine(16)
    assert cores.machine(env={}) == Cores(16, "affinity")
    machine(16, quota=2.5)  # a container of 2.5 CPUs: three threads, never more than 3 cores' worth
    assert cores.machine(env={}) == Cores(3, "cgroup quota")
    machine(16, quota=4)
    assert cores.machine(env={"SLURM_CPUS_PER_TASK": "2"}) == Cores(2, "SLURM_CPUS_PER_TASK")
    assert cores.machine(env={"OMP_NUM_THREADS": "3"}) == Cores(3, "OMP_NUM_THREADS")
    assert cores.machine(env={"OMP_NUM_THREADS": "3,2"}).count == 3  # nested: the outer level
    assert cores.machine(env={"OMP_NUM_THREADS": "junk"}) == Cores(4, "cgroup quota")
    # --threads replaces OMP_NUM_THREADS, but not the machine's own limits.
    assert cores.machine(2, env={"OMP_NUM_THREADS": "1"}) == Cores(2, "--threads")
    assert cores.machine(64, env={"OMP_NUM_THREADS": "1"}) == Cores(4, "cgroup quota")
    machine(1)
    assert cores.machine(8, env={"SLURM_CPUS_PER_TASK": "8"}) == Cores(1, "affinity")
    with pytest.raises(SpecError, match="--threads"):
        cores.machine(-1, env={})


def test_torch_threads_set_in_this_process_are_a_limit(machine: Any, monkeypatch: Any) -> None:
    machine(8)
    monkeypatch.setattr(cores, "torch_threads", lambda: 1)  # a user's torch.set_num_threads(1)
    assert cores.machine(env={}) == Cores(1, "torch threads")
    assert cores.machine(4, env={}) == Cores(4, "--threads")


def cgroup_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cgroup_v2_quota_is_the_smallest_along_the_path(tmp_path: Path) -> None:
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/slurm/job_7/step_0\n")
    cgroup_tree(
        tmp_path / "fs",
        {
            "cpu.max": "max 100000\n",
            "slurm/cpu.max": "800000 100000\n",  # 8 CPUs for all jobs
            "slurm/job_7/cpu.max": "150000 100000\n",  # 1.5 CPUs for this one
            "slurm/job_7/step_0/cpu.max": "max 100000\n",
        },
    )
    assert cores.cgroup_quota(tmp_path / "fs", proc) == 1.5
    (tmp_path / "fs/slurm/job_7/cpu.max").write_text("max 100000\n")
    assert cores.cgroup_quota(tmp_path / "fs", proc) == 8.0
    (tmp_path / "fs/slurm/cpu.max").write_text("max 100000\n")
    assert cores.cgroup_quota(tmp_path / "fs", proc) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:cpuset:/\n")
    cgroup_tree(
        tmp_path / "fs",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",  # no quota at the top
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cores.cgroup_quota(tmp_path / "fs", proc) == 2.0
    (tmp_path / "fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cores.cgroup_quota(tmp_path / "fs", proc) is None
    assert cores.cgroup_quota(tmp_path / "fs", tmp_path / "missing") is None


def test_a_share_beside_other_trainers() -> None:
    two = Cores(2, "affinity")
    assert cores.shared(two, []) == two
    assert cores.shared(two, [2]) == Cores(1, "affinity", 1, 2)  # it shrinks to 1 at its next pack
    assert cores.shared(Cores(8, "affinity"), [2]).count == 6  # what the other leaves free
    assert cores.shared(Cores(8, "affinity"), [8, 8, 8]).count == 2  # an equal share
    assert cores.shared(two, [1, 1, 1]).count == 1  # never none
    again = cores.shared(cores.shared(Cores(8, "affinity"), [4]), [6])  # from the machine's 8
    assert again.count == 4 and again.unshared() == Cores(8, "affinity")


# ------------------------------------------------------------------------------------------------
# The choice


def never() -> Timing:
    raise AssertionError("no pilot when there is nothing to choose")


def test_choose_weighs_startup_against_the_work() -> None:
    two, packs = Cores(2, "affinity"), [list(range(4))]
    fast_start = lambda: Timing([10.0] * 4, speedup=1.1, startup=1.0)  # noqa: E731
    choice = cores.choose(packs, two, 0, False, fast_start)
    assert choice == Choice(2, 1, two, split=True)
    assert choice.describe() == "2 workers × 1 thread on 2 cores"
    slow_start = lambda: Timing([1.0] * 4, speedup=1.1, startup=30.0)  # noqa: E731
    assert cores.choose(packs, two, 0, False, slow_start) == Choice(1, 2, two)
    busy = lambda: Timing([1.0] * 4, speedup=0.4, startup=30.0)  # noqa: E731
    choice = cores.choose(packs, two, 0, False, busy)  # every core in one process is slower
    assert choice == Choice(1, 1, two) and choice.describe() == "1 process × 1 thread on 2 cores"
    assert cores.choose(packs, two, 0, False, lambda: None) == Choice(1, 2, two)  # tiny work
    # One member, one core, or one fixed pack: nothing to choose, no pilot.
    assert cores.choose([[0]], two, 0, False, never) == Choice(1, 2, two)
    assert cores.choose(packs, Cores(1, "OMP_NUM_THREADS"), 0, False, never).workers == 1
    assert cores.choose(packs, two, 0, True, never) == Choice(1, 2, two)


def test_choose_on_many_cores_balances_members() -> None:
    eight = Cores(8, "cgroup quota")
    timing = lambda: Timing([5.0] * 3 + [1.0] * 5, speedup=2.5, startup=2.0)  # noqa: E731
    # In process 20 / 2.5 = 8 s; 3 workers 2 + 7 s; 4 workers 2 + 5 s (5+0, 5+0, 5+0, 1·5), and
    # more cannot beat the longest member: the fewest workers that reach it.
    assert [cores.seconds_split(timing(), w) for w in (3, 4, 5, 6)] == [9.0, 7.0, 7.0, 7.0]
    choice = cores.choose([list(range(8))], eight, 0, False, timing)
    assert (choice.workers, choice.threads, choice.split) == (4, 2, True)
    timing = lambda: Timing([10.0] * 4, speedup=2.5, startup=2.0)  # noqa: E731
    choice = cores.choose([list(range(4))], eight, 0, False, timing)  # 4 × 2 threads: 12 s < 16 s
    assert choice.describe() == "4 workers × 2 threads on 8 cores (cgroup quota)"
    fixed = [[0, 1], [2, 3]]  # --pack-size 2: packs stay whole, spread over 2 workers
    choice = cores.choose(fixed, eight, 0, True, lambda: Timing([5.0] * 4, 1.0, 1.0))
    assert (choice.workers, choice.threads, choice.split) == (2, 4, False)  # 1 + 10 s < 20 s
    choice = cores.choose(fixed, eight, 0, True, lambda: Timing([5.0] * 4, 1.0, 11.0))
    assert choice.workers == 1  # 11 + 10 s: the packs of 10 s each, not members of 5 s, count


def test_jobs_keeps_its_meaning() -> None:
    two = Cores(2, "affinity")

    def asked(workers: int, threads: int) -> Choice:
        return Choice(workers, threads, two, asked=True)

    assert cores.choose([[0], [1], [2]], two, 2, False, never) == asked(2, 1)
    assert cores.choose([[0], [1], [2]], two, 3, False, never) == asked(3, 1)  # more than cores
    assert cores.choose([[0, 1]], two, 2, False, never) == asked(1, 2)  # one pack: here
    beside = cores.shared(two, [2])
    assert cores.choose([[0]], beside, 0, False, never).describe() == (
        "1 process × 1 thread on 1 core (beside 1 other freebits trainer)"
    )


class Tasks:
    """The task queue as `workers._Feed` fills it."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)


def test_workers_take_the_sweeps_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs go out no faster than the share beside other trainers allows, pack by pack: a
    sweep alone on 2 cores keeps 2 one-thread workers busy, gives one core back when another
    sweep takes two, takes it again when that one leaves, and registers what it uses."""
    from freebits_cli.sweep import workers

    others: list[int] = []
    registered: list[int] = []
    monkeypatch.setattr(trainers, "others", lambda: list(others))
    monkeypatch.setattr(trainers, "register", registered.append)
    monkeypatch.setattr(workers, "SHARE_POLL_S", 0.0)
    tasks = Tasks()
    feed = workers._Feed([["a"], ["b"], ["c"], ["d"]], tasks, 2, 1, Cores(2, "affinity"))
    feed()
    assert [i for i, _ in tasks.items] == [0, 1] and registered == [2]
    others.append(2)  # another sweep started on both cores
    feed.done()
    assert len(tasks.items) == 2 and registered[-1] == 1  # one worker waits
    feed.poll()
    assert len(tasks.items) == 2
    feed.done()  # the other worker's pack ends: one goes out, for one core
    assert [i for i, _ in tasks.items] == [0, 1, 2]
    others.clear()  # the other sweep ended: both cores again
    feed.poll()
    assert tasks.items[3:] == [(3, ["d"]), None, None] and registered[-1] == 2  # and stop signs
    feed.done()
    assert registered[-1] == 1  # one pack still out: the sweep uses one core now
    unlimited = Tasks()
    workers._Feed([["a"], ["b"], ["c"]], unlimited, 2, 0, Cores(2, "affinity"))()  # GPU workers
    assert len(unlimited.items) == 3 + 2


def test_only_chosen_workers_wait_for_a_share(
    tmp_path: Path, registry: Path, machine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers freebits chose get the sweep's cores as their limit (some wait when other
    trainers take a share); those --jobs asked for get none: they all train at once."""
    from freebits_cli.sweep import workers

    machine(2)
    limits: list[Any] = []

    def fake_run_packs(packs, grid_paths, devices, jobs, threads, callbacks, limit=None):  # type: ignore[no-untyped-def]
        limits.append(limit)
        return []

    monkeypatch.setattr(workers, "run_packs", fake_run_packs)
    monkeypatch.setattr(cost, "cpu_timing", lambda packs, count, startup: Timing([9.0] * 3, 1, 0))
    sweeps.run(spec([0, 0.5, 1], 1), tmp_path / "chosen")
    sweeps.run(spec([0, 0.5, 1], 1), tmp_path / "asked", jobs=2, pack_size=1)
    assert limits == [Cores(2, "affinity"), None]


def test_cpu_timing_pilots_only_work_worth_a_worker(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cost, "CHOICE_ROUND_S", 0.0)  # the fewest pilot steps: this is no timing
    monkeypatch.setattr(cost, "CHOICE_MAX_S", 0.0)
    small = spec([0, 0.5], 1)
    plan = executor.plan(small, registry / "out")
    packs = executor.make_packs(plan.todo, 0, 1)
    assert cost.cpu_timing(packs, 2, startup=5.0) is None  # hidden [16] on digits: milliseconds
    overrides = [("grid.lambda", [0, 0.5, 1]), ("train.epochs", 3), ("train.device", "cpu")]
    big = build_spec(None, [*overrides, ("model.hidden", [64])])
    plan = executor.plan(big, registry / "out")
    packs = executor.make_packs(plan.todo, 0, 1)
    timing = cost.cpu_timing(packs, 2, startup=0.01)
    assert timing is not None and len(timing.member_seconds) == 3
    assert all(s > 0 for s in timing.member_seconds) and timing.speedup > 0
    assert timing.startup == 0.01


def test_startup_guess() -> None:
    assert cores.startup_guess(3.5) == 3.5  # the last one measured on this machine
    age = cores.process_age()
    assert age is not None and 0 < age < 24 * 3600
    assert cores.startup_guess(None) >= age


def test_brief_spin_leaves_a_users_choice() -> None:
    env: dict[str, str] = {}
    cores.brief_spin(env)
    assert env == {"GOMP_SPINCOUNT": "1000"}
    for own in (
        {"OMP_WAIT_POLICY": "ACTIVE"},
        {"OMP_WAIT_POLICY": "passive"},
        {"GOMP_SPINCOUNT": "0"},
    ):
        env = dict(own)
        cores.brief_spin(env)
        assert env == own


# ------------------------------------------------------------------------------------------------
# Members split over workers: the numbers of --pack-size 1, bit for bit


def test_split_members_equal_pack_size_one(
    tmp_path: Path, registry: Path, machine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lambdas, epochs = [0, 0.5, 1, 2], 2
    machine(2)
    # Make the split pay (the real pilot would not for this tiny model): this is about numbers.
    timing = Timing([10.0] * len(lambdas), speedup=1.0, startup=0.0)
    monkeypatch.setattr(cost, "cpu_timing", lambda packs, count, startup: timing)
    result = sweeps.run(spec(lambdas, epochs), tmp_path / "split")
    choice = result.planned.choice
    assert choice == Choice(2, 1, Cores(2, "affinity"), split=True)
    assert [len(p) for p in result.planned.packs] == [1, 1, 1, 1]  # one pack of 4: one per member
    assert sorted(o.run_id for o in result.outcomes) == sorted(results(tmp_path / "split"))
    assert trainers.startup() is not None  # the workers' start-up was measured and kept
    assert trainers.others() == []  # and the sweep left the registry
    monkeypatch.undo()  # the real machine and pilot: one thread here (the one_thread fixture)
    lone_sweep(tmp_path / "lone", lambdas, epochs, pack_size=1)
    assert results(tmp_path / "split") == results(tmp_path / "lone")


# ------------------------------------------------------------------------------------------------
# Two sweeps beside each other


def test_two_sweeps_share_the_cores_and_the_work(tmp_path: Path, registry: Path) -> None:
    """Two sweeps started together on one folder, beside a third trainer in the registry (this
    test's process, 1 core): each takes its share (1 core), each run is trained once, and the
    numbers are a lone sweep's."""
    lambdas, epochs = [0, 0.5, 1, 2], 3
    trainers.register(1)
    env = {**ENV, "XDG_RUNTIME_DIR": str(registry), "COLUMNS": "400"}  # the plan line on one line
    flags = ["--lambdas", "0,0.5,1,2", "--epochs", str(epochs), "--threads", "2"]
    flags += ["--out", str(tmp_path / "shared")]
    procs = [
        subprocess.Popen(
            [*COMMAND, *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, stdout + stderr
        assert "on 1 process × 1 thread on 1 core (beside " in stdout, stdout
    trained = [int(re.search(r"trained (\d+) run\(s\) here", o).group(1)) for o, _ in outs]
    assert sum(trained) == len(lambdas), outs  # each run trained once, by one of the two
    assert_clean_csvs(tmp_path / "shared", epochs)
    lone_sweep(tmp_path / "lone", lambdas, epochs)
    assert results(tmp_path / "shared") == results(tmp_path / "lone")
    assert trainers.others() == []  # both left; this process is the only one registered
    trainers.leave()


# ------------------------------------------------------------------------------------------------
# The registry


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_registry_prunes_dead_and_reused_pids(registry: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trainers.register(2, pid=sleeper.pid)
        trainers.register(1, pid=dead_pid())
        trainers.register(1)
        assert sorted(trainers.others()) == [2]  # the dead one pruned, this process not counted
        assert sorted(trainers.others(pid=sleeper.pid)) == [1]  # this process, seen by the other
        # A pid that names another process now (its start time differs) is pruned too.
        path = trainers.folder() / next(p.name for p in trainers.folder().glob("*.json"))
        text = path.read_text().replace(
            f'"started": {trainers.start_time(sleeper.pid)}', '"started": 1'
        )
        path.write_text(text)
        assert trainers.others() == []
        trainers.leave()
        assert trainers.others(pid=sleeper.pid) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_registry_survives_a_torn_file_and_an_unwritable_folder(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainers.register(2)
    path = next(trainers.folder().glob("*.json"))
    path.write_text('{"trainers": {"12')  # torn by a crash mid-write (writes are atomic now)
    assert trainers.others() == []
    trainers.record_startup(1.25)
    assert trainers.startup() == 1.25
    blocked = registry / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocked))  # runtime "folder" is a file: no registry
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert trainers.others() == [] and trainers.startup() is None
    trainers.register(1)  # advice only: nothing raised


def test_registered_block(registry: Path) -> None:
    with trainers.registered(2):
        assert trainers.others(pid=1) == [2]
    assert trainers.others(pid=1) == []
    with trainers.registered(0):  # a GPU sweep does not register
        assert trainers.others(pid=1) == []
