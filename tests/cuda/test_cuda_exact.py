"""What is exact on one GPU: a rerun, a resume after a kill or SIGTERM; and what is statistical:
packed against `--pack-size 1`.

Determinism settings: freebits sets `torch.backends.cudnn.deterministic = True` and
`cudnn.benchmark = False` for every pack on CUDA (cuDNN's autotuner and its atomics-based
convolution backward kernels are the usual sources of run-to-run differences); matmuls go through
cuBLAS, whose results are reproducible on one GPU model and toolkit for a given stream. Nothing here
sets `torch.use_deterministic_algorithms` or CUBLAS_WORKSPACE_CONFIG: the tests check what a user's
plain command gets.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sweeps
import yaml
from faults import Kill, count_writes
from gpu_sweeps import ENV, csv_without_timing, same_files, summaries, train, write_npz
from seed_stats import compare_means

from freebits_cli.spec.files import build_spec

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npz(tmp_path_factory.mktemp("exact") / "images.npz", 2560, 512)


def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "freebits_cli", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, **kwargs)


def test_rerunning_a_sweep_reproduces_every_csv_bit_for_bit(images: Path, tmp_path: Path) -> None:
    """The same command twice, each a fresh process, MLP and conv runs: equal CSVs but time."""
    spec = {
        "name": "rerun",
        "dataset": {"name": str(images)},
        "model": {"hidden": [64, 32], "channels": [8, 16], "dense": 32, "latent_dim": 4},
        "train": {"epochs": 2, "device": "cuda"},
        "eval": {"iwae_samples": 10},
        "grid": {"lambda": [0, 1], "model.arch": ["mlp", "conv"]},
    }
    path = tmp_path / "rerun.yaml"
    path.write_text(yaml.safe_dump(spec))
    for out in ("first", "second"):
        done = cli("sweep", str(path), "--out", str(tmp_path / out))
        assert done.returncode == 0, done.stderr
    first, second = tmp_path / "first" / "rerun", tmp_path / "second" / "rerun"
    assert len(summaries(first)) == 4
    same_files(first, second)
    for run_id, summary in summaries(first).items():
        other = summaries(second)[run_id]
        assert {k: v for k, v in summary.items() if k != "seconds"} == {
            k: v for k, v in other.items() if k != "seconds"
        }, run_id


# -- kill and resume ------------------------------------------------------------------------------

SMALL = [
    ("model.hidden", [64]),
    ("model.latent_dim", 4),
    ("train.epochs", 2),
    ("train.device", "cuda"),
    ("eval.iwae_samples", 10),
    ("eval.samples", 2),
    ("grid.lambda", [0, 1]),
]


def sweep(out: Path, images: Path) -> None:
    spec = build_spec(None, [*SMALL, ("dataset.name", str(images))])
    sweeps.run(spec, out)


def outputs(sweep_dir: Path) -> dict[str, Any]:
    """Everything a run keeps but wall-clock time and the device's name."""
    found = {}
    for folder in sorted((sweep_dir / "runs").iterdir()):
        summary = json.loads((folder / "summary.json").read_text())
        for key in ("seconds", "device"):
            summary.pop(key, None)
        metrics = csv_without_timing(folder / "metrics.csv")
        found[folder.name] = (summary, metrics, (folder / "kl_per_dim.csv").read_text())
    return found


def test_a_kill_between_any_two_writes_of_an_epoch_resumes_exactly(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        writes = count_writes(patch, None)
        sweep(tmp_path / "straight", images)
    expected = outputs(tmp_path / "straight" / "default")
    first = next(i for i, w in enumerate(writes) if "checkpoint" in w)
    epoch = range(first + 1, first + 9)  # epoch 1: 2 checkpoints, 2 × 2 CSV appends, 2 promotions
    assert all(w.startswith(("_atomic", "append", "promote")) for w in writes[first : first + 8])
    for kill_at in epoch:
        out = tmp_path / f"kill{kill_at}"
        with monkeypatch.context() as patch:
            count_writes(patch, kill_at)
            with pytest.raises(Kill):
                sweep(out, images)
        sweep(out, images)
        assert outputs(out / "default") == expected, f"killed before {writes[kill_at - 1]}"


KILLER = """
import os, sys
from freebits_cli.results import storage
real, count, at = storage.append_rows, [0], int(os.environ["KILL_AT"])
def append_rows(*args, **kwargs):
    count[0] += 1
    if count[0] == at:
        os._exit(137)  # as kill -9: no cleanup, no flush, the lock dropped by the OS
    return real(*args, **kwargs)
storage.append_rows = append_rows
from freebits_cli.cli import app
app(sys.argv[1:])
"""


def cli_args(images: Path, out: Path, *extra: str) -> list[str]:
    args = ["sweep", "--dataset", str(images), "--lambdas", "0,1", "--latent-dim", "4"]
    args += ["--set", "model.hidden=[64]", "--set", "eval.iwae_samples=10", "--device", "cuda"]
    return [*args, "--set", "eval.samples=2", "--out", str(out), *extra]


def test_a_process_killed_between_rows_resumes_exactly(images: Path, tmp_path: Path) -> None:
    """A real process death after one member's rows of epoch 1, before the other's."""
    args = cli_args(images, tmp_path / "killed", "--epochs", "2")
    command = [sys.executable, "-c", KILLER, *args]
    killed = subprocess.run(command, env={**ENV, "KILL_AT": "3"}, capture_output=True)
    assert killed.returncode == 137, killed.stderr
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    sweep(tmp_path / "straight", images)
    assert outputs(tmp_path / "killed" / "default") == outputs(tmp_path / "straight" / "default")


def test_sigterm_mid_epoch_then_resume_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    # Batches of 4: 1,280 steps an epoch, long enough on any GPU for the signal to land inside one.
    images = write_npz(tmp_path / "long.npz", 5120, 256)
    extra = ("--epochs", "3", "--set", "train.batch_size=4")
    args = cli_args(images, tmp_path / "stopped", *extra)
    proc = subprocess.Popen([sys.executable, "-m", "freebits_cli", *args], env=ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    rows = tmp_path / "stopped" / "default" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not list(rows.glob("*/checkpoint.pt")):
        time.sleep(0.02)
    time.sleep(0.1)  # into epoch 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not list(rows.glob("*/summary.json")), "stopped too late"
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    straight = cli(*cli_args(images, tmp_path / "straight", *extra))
    assert straight.returncode == 0, straight.stderr
    assert outputs(tmp_path / "stopped" / "default") == outputs(tmp_path / "straight" / "default")


# -- packed against alone: the same distribution --------------------------------------------------


def test_packed_and_alone_agree_within_seed_spread(
    images: Path, tmp_path: Path, record: Callable[..., None]
) -> None:
    """10 seeds trained as one pack and one by one: Welch's 99% interval for the difference of
    mean final test ELBO contains 0 (see seed_stats; the machinery is tested on the CPU)."""
    overrides = [
        ("dataset.name", str(images)),
        ("model.hidden", [128, 64]),
        ("model.latent_dim", 8),
        ("train.epochs", 3),
        ("grid.lambda", [0.5]),
        ("grid.anneal", ["linear"]),
        ("grid.seed", list(range(10))),
        ("eval.iwae_samples", 0),
    ]
    packed = summaries(train(tmp_path / "packed", overrides))
    alone = summaries(train(tmp_path / "alone", overrides, pack_size=1))
    assert packed.keys() == alone.keys() and len(packed) == 10
    a = [packed[r]["test_elbo"] for r in sorted(packed)]
    b = [alone[r]["test_elbo"] for r in sorted(packed)]
    result = compare_means(a, b)
    record(packed=a, alone=b, difference=result.difference, low=result.low, high=result.high)
    assert result.indistinguishable, str(result)
