"""README's "Use" block runs as printed, in order, on tiny settings, so it cannot rot.

Each `freebits …` line is run through the command line as written, with only what a test needs
added: options that make it small (a tiny model, one epoch, few IWAE samples) where the line does
not set them itself, and the same ones on every line, so lines that agree or clash as printed
still agree or clash. The data the lines name are made small and local: MNIST IDX files in
~/data/mnist (HOME is a temporary folder), the same files in ~/.cache/freebits for Fashion-MNIST,
and `my_images.npz`. The Slurm line runs against stub sbatch/srun/sacct with `--no-wait`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from threads import torch_threads
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.data import images as data_module
from freebits_cli.sweep import runs

ROOT = Path(__file__).parents[2]
runner = CliRunner()


def use_block() -> list[list[str]]:
    """The commands of README's "Use" section: its first ```sh block."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Use\n") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [words for words in lines if words]


def tiny(words: list[str]) -> list[str]:
    """`words` (after `freebits`) with tiny settings added to a sweep, where it sets none."""
    if words[0] != "sweep":
        return words
    said = " ".join(words)
    extra = ["--device", "cpu", "--set", "eval.iwae_samples=2", "--set", "eval.samples=2"]
    if "--epochs" not in said and "train.epochs" not in said:
        extra += ["--epochs", "1"]
    if "model.hidden" not in said:
        extra += ["--set", "model.hidden=[8]"]
    if "--latent-dim" not in said and "model.latent_dim" not in said:
        extra += ["--latent-dim", "2"]
    if "--executor" in said and "--no-wait" not in said:
        extra.append("--no-wait")  # stub Slurm: the jobs never run
    return [*words, *extra]


def write_idx(path: Path, images: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, images.ndim) + struct.pack(
        f">{images.ndim}I", *images.shape
    )
    path.write_bytes(header + images.astype(np.uint8).tobytes())


@pytest.fixture
def a_users_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    rng = np.random.default_rng(0)
    home, work = tmp_path / "home", tmp_path / "work"
    for folder in (home / "data" / "mnist", home / ".cache" / "freebits"):
        write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (96, 28, 28)))
        write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (32, 28, 28)))
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    np.savez(
        work / "my_images.npz",
        x_train=rng.integers(0, 256, (96, 8, 8), dtype=np.uint8),
        x_test=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8),
    )
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "sbatch").write_text('#!/bin/sh\necho "Submitted batch job 4242"\n')
    for name in ("srun", "sacct", "scancel", "squeue"):
        (stubs / name).write_text("#!/bin/sh\nexit 0\n")
    for path in stubs.iterdir():
        path.chmod(0o755)
    # Only the temporary home holds data: not a system folder (Debian's Fashion-MNIST), nor
    # data sets this test process loaded before.
    monkeypatch.setattr(data_module, "SYSTEM_DIRS", {name: [] for name in data_module.SYSTEM_DIRS})
    runs.dataset.cache_clear()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FREEBITS_DATA", raising=False)
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(work)
    with torch_threads(1):  # tiny models on a shared machine: one thread is many times faster
        yield work
    runs.dataset.cache_clear()


def test_readme_use_block_runs_as_printed_in_order(a_users_home: Path) -> None:
    commands = use_block()
    assert len(commands) >= 10 and all(words[0] == "freebits" for words in commands)
    for words in commands:
        args = tiny([os.path.expanduser(w) for w in words[1:]])
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{shlex.join(words)}\n{result.output}"
    results = a_users_home / "results"
    sweeps = sorted(p.parent.name for p in results.glob("*/spec.yaml"))
    assert sweeps == [
        "anneal-grid",
        "anneal-lr3e-4",
        "default",
        "mnist-lambda-sweep",
        "my-images",
        "smoke",
    ]
    assert len(list(results.glob("anneal-grid/runs/*/summary.json"))) == 30
    assert len(list(results.glob("default/runs/*/summary.json"))) == 5
    assert (results / "report" / "index.html").is_file()
    status = runner.invoke(app, ["status", "results/", "--json"])
    rows = [json.loads(line) for line in status.output.splitlines()]
    smoke = sorted(r["state"] for r in rows if r["sweep"] == "smoke")
    assert smoke == ["done", "queued"]  # a quarter trained here, the rest submitted


def test_readme_says_demo_numbers_match_only_on_the_same_cpu_and_torch() -> None:
    assert "only on the same CPU model and torch version" in (ROOT / "README.md").read_text()
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| Default demo sweep"))
    assert "same CPU model and torch version" in row
