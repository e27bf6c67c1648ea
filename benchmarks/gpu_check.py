"""`make gpu-check`: every GPU check in one command, leaving one folder a reader can trust.

Steps, in order, each in its own process, within a time budget (default 7.5 minutes, so the whole
check fits a few minutes of an H100-class GPU; a step still running when the budget is spent is
stopped, and it and the steps after it are recorded as not done):

  machine   nvidia-smi, Python, torch, CUDA, cuDNN, the GPUs, the git commit
  tests     pytest -m cuda (tests/cuda/): junit XML, the log, the tests' measurements
  lstm      benchmarks/text_speed.py --recurrence-only: the batched LSTM recurrence of a text pack
            against K cuDNN LSTM calls, K = 1, 4, 16, 64 (seconds, no data needed)
  speed-3   benchmarks/speed.py --device cuda --epochs 3 --runs-seeds 3 (30 runs × 3 epochs: ways
            (a) freebits, (b) --pack-size 1, (d) the on-device tensor loop; the pack scaling
            table up to K = 64)
  speed-10  the same sweep for 10 epochs, ways (a) and (d)
  summary   summary.md: what ran, for how long, with what result; the tables

Everything goes to `gpu-check/<date>-<gpu name>/` (`--out` changes the parent). The torchvision
DataLoader loop (c) is left out: on a GPU it takes minutes per run-epoch and is not what the
targets compare against. Nothing is installed: the interpreter running this script is used, with
the checkout on PYTHONPATH. `--dry-run` lists what would run (and the tests it would collect).
`--device cpu` rehearses the whole check on a CPU at smoke-test sizes (every CUDA test is skipped).

Run: PYTHONPATH=. python3 benchmarks/gpu_check.py [--data-dir DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from speed import STEMS, default_data_dir, find_idx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEED = HERE / "speed.py"
TEXT_SPEED = HERE / "text_speed.py"
STEPS = ("tests", "lstm", "speed-3", "speed-10")
#: What the checks import; a GPU box without a package index must already have them.
NEEDED = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "scipy": "scipy",
    "yaml": "pyyaml",
    "typer": "typer",
    "rich": "rich",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "pytest": "pytest",
}
BUDGET_S = 460.0
#: A step with less time than this left is not started; a stopped step gets this long to exit.
MIN_STEP_S, STOP_GRACE_S = 5.0, 10.0
#: Environment variables the CUDA tests read (see tests/cuda/gpu_sweeps.py).
RECORD_ENV, DATA_ENV = "FREEBITS_GPU_CHECK_OUT", "FREEBITS_GPU_CHECK_DATA"
MACHINE = """
import json, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "python": platform.python_version(),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if cuda else None,
    "cuda_available": cuda,
    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
}))
"""


@dataclass
class Step:
    """One command of the check: its name, what it runs, the files it leaves in the record."""

    name: str
    what: str
    command: list[str]
    log: str
    limit_s: float | None = None
    status: str = "not run"
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST IDX files")
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check", help="records go here")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all steps")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a rehearsal")
    parser.add_argument("--dry-run", action="store_true", help="list what would run; run nothing")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help="which steps (machine always runs)"
    )
    args = parser.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(args.steps) - set(STEPS)
    if unknown:
        parser.error(f"--steps: unknown {sorted(unknown)} ({', '.join(STEPS)})")
    return args


def plan(args: argparse.Namespace, record: Path, data_dir: Path) -> list[Step]:
    python = sys.executable
    cpu = args.device == "cpu"
    steps = []
    if "tests" in args.steps:
        steps.append(
            Step(
                "tests",
                "pytest -m cuda: the CUDA suite",
                [python, "-m", "pytest", "-m", "cuda", "tests/cuda", "-vv", "-rs", "-p",
                 "no:cacheprovider", f"--junitxml={record / 'pytest-cuda.xml'}"],
                "pytest-cuda.log",
                limit_s=None if cpu else 240.0,
                outputs=["pytest-cuda.xml", "measurements.jsonl"],
            )
        )  # fmt: skip
    if "lstm" in args.steps:
        command = [python, str(TEXT_SPEED), "--device", args.device, "--recurrence-only"]
        command += ["--markdown", str(record / "lstm.md")]
        what = "text_speed.py: batched LSTM recurrence vs K cuDNN LSTM calls"
        steps.append(Step("lstm", what, command, "lstm.log", limit_s=None if cpu else 60.0,
                          outputs=["lstm.md"]))  # fmt: skip
    sizes = ["--quick", "--epochs", "1", "--runs-seeds", "1"] if cpu else ["--runs-seeds", "3"]
    for name, epochs, skip in (("speed-3", 3, "c"), ("speed-10", 10, "b,c,scaling")):
        if name not in args.steps:
            continue
        command = [python, str(SPEED), "--device", args.device]
        command += [
            "--data-dir",
            str(data_dir),
            *(sizes if cpu else [*sizes, "--epochs", str(epochs)]),
        ]
        command += ["--skip", skip, "--json", str(record / f"{name}.json")]
        command += ["--markdown", str(record / f"{name}.md")]
        what = f"speed.py: 30 runs × {epochs} epochs" + (
            ", the pack scaling table" if name == "speed-3" else ""
        )
        if cpu:
            what = "speed.py --quick: smoke-test sizes on the CPU"
        steps.append(
            Step(name, what, command, f"{name}.log", outputs=[f"{name}.json", f"{name}.md"])
        )
    return steps


def missing_packages() -> list[str]:
    return [pip for module, pip in NEEDED.items() if importlib.util.find_spec(module) is None]


def machine(python: str, env: dict[str, str]) -> dict[str, object]:
    """Versions and GPUs as the checks' interpreter sees them (in a child: no CUDA context here)."""
    done = subprocess.run([python, "-c", MACHINE], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"error: {python} cannot report torch's CUDA setup:\n{done.stderr}")
    info: dict[str, object] = json.loads(done.stdout)
    info["executable"] = python
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        info["git_commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def record_folder(parent: Path, gpu: str) -> Path:
    """`<parent>/<UTC date>-<gpu name>`, numbered when that day's folder exists already."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "unknown"
    base = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}-{slug}"
    folder, n = parent / base, 1
    while folder.exists():
        n += 1
        folder = parent / f"{base}-{n}"
    return folder


def nvidia_smi(path: Path) -> None:
    found = shutil.which("nvidia-smi")
    if found is None:
        path.write_text("nvidia-smi: not found on PATH\n")
        return
    parts = []
    for args in ([], ["-q"]):
        done = subprocess.run([found, *args], capture_output=True, text=True)
        parts.append(f"$ nvidia-smi {' '.join(args)}\n{done.stdout}{done.stderr}")
    path.write_text("\n".join(parts))


def stop(proc: subprocess.Popen[str], fired: threading.Event | None = None) -> None:
    """Interrupt the step's whole process group (pytest then still writes its junit XML for the
    tests that ran); whatever is left after STOP_GRACE_S is killed."""
    if fired is not None:
        fired.set()
    for signum in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
            return


def run_step(step: Step, record: Path, env: dict[str, str], deadline: float) -> None:
    """Run `step`, its output both on the terminal (progress) and in its log; stop it at the
    earlier of its own limit and the check's deadline."""
    left = deadline - time.monotonic()
    limit = min(left, step.limit_s or left)
    if limit < MIN_STEP_S:
        step.status = "skipped: out of time"
        print(f"[{step.name}] skipped: the time budget is spent", flush=True)
        return
    print(f"[{step.name}] {step.what} (at most {limit:.0f} s)", flush=True)
    started = time.monotonic()
    with open(record / step.log, "w") as log:
        log.write("$ " + " ".join(step.command) + "\n")
        # Its own process group: stopping it stops the processes it started too.
        proc = subprocess.Popen(step.command, cwd=ROOT, env=env, text=True, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        fired = threading.Event()
        watchdog = threading.Timer(limit, stop, (proc, fired))
        watchdog.start()  # fires whether or not the child prints anything
        assert proc.stdout is not None
        try:
            for line in proc.stdout:  # until the child's output closes
                log.write(line)
                print(f"[{step.name}] {line}", end="", flush=True)
            code = proc.wait()
        except BaseException:  # Ctrl-C: the step's process group is not the terminal's
            stop(proc)
            raise
        finally:
            watchdog.cancel()
    timed_out = fired.is_set()
    step.seconds = time.monotonic() - started
    step.status = f"timed out after {step.seconds:.0f} s" if timed_out else (
        "passed" if code == 0 else f"failed (exit code {code})"
    )  # fmt: skip
    print(f"[{step.name}] {step.status} in {step.seconds:.0f} s", flush=True)


def junit_counts(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


def junit_problems(path: Path) -> list[str]:
    """`test id: first line of the message` of every failed or erroring test."""
    if not path.is_file():
        return []
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            message = (bad.get("message") or "").strip().splitlines()
            found.append(
                f"{case.get('classname')}::{case.get('name')}: {message[0] if message else ''}"
            )
    return found


def summary(record: Path, info: dict[str, object], steps: list[Step], started: str) -> str:
    gpus = ", ".join(info["gpus"]) or "none"  # type: ignore[arg-type]
    lines = [
        f"# gpu-check: {gpus}, {started}",
        "",
        f"- Python {info['python']} ({info['executable']}), torch {info['torch']}, "
        f"CUDA {info['cuda']}, cuDNN {info['cudnn']}",
        f"- git commit: {info['git_commit']}",
        "- files: `environment.json`, `nvidia-smi.txt`, and per step its log and outputs below",
        "",
        "| step | what | result | seconds | files |",
        "|---|---|---|---:|---|",
    ]
    for s in steps:
        files = ", ".join(f"`{f}`" for f in [s.log, *s.outputs] if (record / f).exists())
        lines.append(f"| {s.name} | {s.what} | {s.status} | {s.seconds:.0f} | {files} |")
    counts = junit_counts(record / "pytest-cuda.xml")
    if counts is not None:
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        lines += ["", "## pytest -m cuda", ""]
        lines.append(
            f"{counts['tests']} tests: {passed} passed, {counts['failures']} failed, "
            f"{counts['errors']} errors, {counts['skipped']} skipped (reasons in the log)."
        )
        lines += [f"- {p}" for p in junit_problems(record / "pytest-cuda.xml")]
    measured = record / "measurements.jsonl"
    if measured.is_file():
        lines += ["", "Measurements the tests recorded (`measurements.jsonl`):", ""]
        lines += [f"- `{line}`" for line in measured.read_text().splitlines()]
    for name in ("lstm", "speed-3", "speed-10"):
        if (record / f"{name}.md").is_file():
            lines += ["", f"## {name}", "", (record / f"{name}.md").read_text().strip()]
    return "\n".join(lines) + "\n"


def dry_run(args: argparse.Namespace, steps: list[Step], env: dict[str, str], data: str) -> int:
    print(f"would write: {args.out}/<date>-<gpu name>/ (budget {args.budget:.0f} s)")
    print(f"python: {sys.executable}; PYTHONPATH={env['PYTHONPATH']}")
    missing = missing_packages()
    print(f"packages: {'missing ' + ', '.join(missing) if missing else 'all found'}")
    print(f"data: {data}")
    print("machine: nvidia-smi, nvidia-smi -q, versions of Python/torch/CUDA/cuDNN, git commit")
    for step in steps:
        print(f"{step.name}: {step.what}\n  $ {' '.join(step.command)}")
    if missing:
        print("error: the check cannot run with this interpreter (nothing is installed by it)")
        return 1
    if any(s.name == "tests" for s in steps):
        listed = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "cuda", "tests/cuda", "--collect-only",
             "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        tests = [line for line in listed.stdout.splitlines() if "::" in line]
        print(f"tests ({len(tests)}):")
        print("\n".join(f"  {t}" for t in tests))
        if listed.returncode not in (0, 5):
            print(listed.stdout[-2000:] + listed.stderr[-2000:])
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")) if p
    )
    data_dir = args.data_dir or default_data_dir()
    found = find_idx(data_dir, STEMS["train"]) is not None
    data = f"{data_dir} ({'found' if found else 'no Fashion-MNIST IDX files there'})"
    speed = any(s.startswith("speed") for s in args.steps)
    if args.dry_run:
        return dry_run(args, plan(args, args.out / "<record>", data_dir), env, data)
    missing = missing_packages()
    if missing:
        print(f"error: {sys.executable} lacks {', '.join(missing)}; run with PYTHON= an "
              "interpreter that has them (nothing is installed by this check)", file=sys.stderr)  # fmt: skip
        return 2
    if speed and not found:
        print(f"error: --data-dir {data_dir}: no {STEMS['train']}[.gz] (Fashion-MNIST IDX); "
              "pass DATA_DIR=... to make, or --data-dir", file=sys.stderr)  # fmt: skip
        return 2
    info = machine(sys.executable, env)
    if args.device != "cpu" and not info["cuda_available"]:
        print(f"error: no CUDA GPU visible to {sys.executable} (torch {info['torch']}, CUDA "
              f"{info['cuda']}); `--dry-run` lists the steps", file=sys.stderr)  # fmt: skip
        return 2
    gpus = info["gpus"] or ["cpu"]  # type: ignore[truthy-bool]
    record = record_folder(args.out, gpus[0] if args.device != "cpu" else "cpu-rehearsal")  # type: ignore[index]
    record.mkdir(parents=True)
    env[RECORD_ENV], env[DATA_ENV] = str(record), str(data_dir)
    started = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"gpu-check: {', '.join(gpus)}; record: {record}", flush=True)  # type: ignore[arg-type]
    (record / "environment.json").write_text(json.dumps(info, indent=1) + "\n")
    nvidia_smi(record / "nvidia-smi.txt")
    steps = plan(args, record, data_dir)
    deadline = time.monotonic() + args.budget
    for step in steps:
        run_step(step, record, env, deadline)
    (record / "summary.json").write_text(
        json.dumps([{k: v for k, v in vars(s).items()} for s in steps], indent=1) + "\n"
    )
    (record / "summary.md").write_text(summary(record, info, steps, started))
    print(f"record: {record}/summary.md", flush=True)
    return 0 if all(s.status == "passed" for s in steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
