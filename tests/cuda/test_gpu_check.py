"""`make gpu-check` rehearsed on the CPU: the dry run, the record folder, the time budget, and the
speed tables as Markdown. (The CUDA tests themselves are skipped here, with their reason.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from argparse import Namespace
from pathlib import Path

import gpu_check
import pytest
import speed_report

ROOT = Path(__file__).parents[2]


def test_make_gpu_check_dry_run_lists_every_step_and_every_cuda_test() -> None:
    """`make gpu-check DRY_RUN=1` with a given Python and no PYTHONPATH of ours: from the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAKEFLAGS")}
    command = ["make", "-s", "gpu-check", "DRY_RUN=1", f"PYTHON={sys.executable}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"python: {sys.executable}; PYTHONPATH={ROOT}" in out and "packages: all found" in out
    for needle in (
        "gpu-check/<date>-<gpu name>/",
        "-m pytest -m cuda tests/cuda",
        "--junitxml=",
        "speed.py --device cuda",
        "--runs-seeds 3 --epochs 3 --skip c ",
        "--runs-seeds 3 --epochs 10 --skip b,c,scaling ",
        "text_speed.py --device cuda --recurrence-only",
        "--markdown",
    ):
        assert needle in out, needle
    listed = [line.strip() for line in out.splitlines() if "::" in line]
    count = int(out.split("tests (")[1].split(")")[0])
    assert count == len(listed) >= 20
    for name in ("replay_equals_eager", "with_graph_equals", "[lstm]", "bit_for_bit", "resumes"):
        assert any(name in t for t in listed), name
    for name in ("within_seed_spread", "half_a_nat", "two_workers", "estimate_is_above"):
        assert any(name in t for t in listed), name


def test_cpu_rehearsal_writes_the_record_folder(tmp_path: Path) -> None:
    """The tests step for real (every CUDA test skipped with its reason), then the record."""
    code = gpu_check.main(["--device", "cpu", "--steps", "tests", "--out", str(tmp_path)])
    assert code == 0
    (record,) = tmp_path.iterdir()
    assert record.name.endswith("-cpu-rehearsal") and record.name[:4].isdigit()
    names = {p.name for p in record.iterdir()}
    expected = {"environment.json", "nvidia-smi.txt", "pytest-cuda.xml", "pytest-cuda.log"}
    assert expected | {"summary.md", "summary.json"} <= names
    env = json.loads((record / "environment.json").read_text())
    assert {"python", "torch", "cuda", "cudnn", "gpus", "git_commit"} <= env.keys()
    cases = list(ET.parse(record / "pytest-cuda.xml").getroot().iter("testcase"))
    assert len(cases) >= 20
    for case in cases:
        (skipped,) = case.findall("skipped")
        assert "CUDA is not available" in (skipped.get("message") or ""), case.get("name")
    summary = (record / "summary.md").read_text()
    assert f"{len(cases)} tests: 0 passed, 0 failed, 0 errors, {len(cases)} skipped" in summary
    steps = json.loads((record / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in steps] == [("tests", "passed")]


STAND_IN = """
import sys, time
from pathlib import Path
args = sys.argv[1:]
print("(a) freebits ... 1.0 s", flush=True)
if any("speed-10" in a for a in args):
    time.sleep(60)  # a step that would overrun the budget
Path(args[args.index("--json") + 1]).write_text("{}")
Path(args[args.index("--markdown") + 1]).write_text("| way | wall s |\\n|---|---:|\\n| (a) | 1.0 |")
"""


def test_speed_steps_are_kept_and_a_step_past_the_budget_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for speed.py (the orchestration, not the benchmark, is under test here)."""
    stand_in = tmp_path / "speed_stand_in.py"
    stand_in.write_text(STAND_IN)
    monkeypatch.setattr(gpu_check, "SPEED", stand_in)
    monkeypatch.setattr(gpu_check, "MIN_STEP_S", 0.5)
    info = {"python": "3", "torch": "2", "cuda": None, "cudnn": None, "cuda_available": False}
    canned = {**info, "gpus": [], "git_commit": None, "executable": sys.executable}
    monkeypatch.setattr(gpu_check, "machine", lambda *_: canned)
    out = tmp_path / "records"
    started = time.monotonic()
    args = ["--device", "cpu", "--steps", "speed-3,speed-10", "--out", str(out), "--budget", "3"]
    assert gpu_check.main(args) == 1
    assert time.monotonic() - started < 15
    (record,) = out.iterdir()
    steps = {s["name"]: s["status"] for s in json.loads((record / "summary.json").read_text())}
    assert steps["speed-3"] == "passed" and steps["speed-10"].startswith("timed out")
    summary = (record / "summary.md").read_text()
    assert "## speed-3" in summary and "| (a) | 1.0 |" in summary and "## speed-10" not in summary
    assert "(a) freebits ... 1.0 s" in (record / "speed-10.log").read_text()


def test_speed_tables_as_markdown() -> None:
    ways = {
        "runs": 30,
        "epochs": 3,
        "n_train": 60000,
        "n_test": 10000,
        "a": {"seconds": 10.0, "rss_mb": 900.0, "cuda_peak_bytes": 2**30, "test_elbo": {"r": -1}},
        "b": {"seconds": 40.0, "rss_mb": 900.0, "cuda_peak_bytes": 2**29, "test_elbo": {"r": -2}},
        "d": {"seconds": 350.0, "rss_mb": 800.0},
        "commands": {"a": "python -m freebits_cli sweep ..."},
    }
    figures = {
        "machine": {"peak_gflops": 50000.0, "device_name": "GPU X", "torch": "2", "threads": 8},
        "load_before": [0.1],
        "load_after": [0.2],
        "ways": ways,
        "scaling": {"n_train": 25600, "n_test": 1000, "seconds": {"warm-up": 9, "1": 2, "64": 4}},
    }
    text = speed_report.markdown(figures, Namespace(device="cuda"))
    assert "- device: cuda — GPU X" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| (")}
    assert set(rows) == {"| (a) freebits", "| (b) freebits --pack-size 1", "| (d) tensor loop"}
    assert "| 35.00× |" in rows["| (a) freebits"] and "| 1024 |" in rows["| (a) freebits"]
    assert "| 64 | 4.00 | 16.000 | 32.00× |" in text  # 64 runs in twice the time of one
    assert "max |Δ final test ELBO| of a run, (a) vs (b): 1 nats" in text
