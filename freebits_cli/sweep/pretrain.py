"""Encoder pretraining (Li et al. 2019, bohanli/vae-pretraining-encoder: `text_beta.py --beta 0`,
then `text_anneal_fb.py --load_path … --reset_dec`) as a run that other runs depend on.

A run with `pretrain.epochs: N` starts from an autoencoder: the same model, data, optimiser and
seed trained for N epochs with β = 0 (the KL term off, no free bits). That autoencoder is a run of
its own (`pretraining_of`), stored once in RESULTS/<sweep>/pretrain/<its id>/ and shared by every
run with the same pretraining — the fields that act after it (free bits, annealing, evaluation,
the decoder reset, the run's own epochs) are not part of it. The sweep plans the pretrainings its
runs need and trains them first (`executor.plan`, `run`); a pack that finds one missing (another
process, a cluster job) trains or waits for it under its lock (`pack_runner.ensure_pretrainings`),
so it is trained once, resumes exactly after a kill like any run, and a run never starts from an
unfinished one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from freebits_cli import schema
from freebits_cli.errors import SpecError
from freebits_cli.results import storage
from freebits_cli.spec import AnnealSpec, FreeBitsSpec, InitSpec, PretrainSpec, RunConfig

#: β ≡ 0 for every step: a linear schedule from 0 to 0 (the autoencoder of `--beta 0`).
AUTOENCODER = AnnealSpec(schedule="linear", beta_start=0.0, beta_max=0.0)


def pretraining_of(run: RunConfig) -> RunConfig | None:
    """The autoencoder run `run` starts from, or None without pretraining.

    Evaluation keeps the run's selection (with `best_valid` the run starts from the best
    validation epoch, as Li et al. load their best autoencoder) but skips the end-of-run IWAE
    bound, MI and samples, which no one reads of an autoencoder."""
    if not run.pretrain.epochs:
        return None
    return dataclasses.replace(
        run,
        train=dataclasses.replace(run.train, epochs=run.pretrain.epochs, aggressive=False),
        free_bits=FreeBitsSpec(),
        anneal=AUTOENCODER,
        eval=dataclasses.replace(run.eval, iwae_samples=0, iwae_every=0, mi=False, samples=0),
        pretrain=PretrainSpec(),
        init=InitSpec(),
    )


def folder_of(sweep: Path, pretraining: RunConfig) -> Path:
    """RESULTS/<sweep>/pretrain/<id>: a run folder like those under runs/."""
    storage.run_dir(sweep, pretraining.run_id)  # refuses an unsafe id
    return sweep / schema.PRETRAIN_DIR / pretraining.run_id


def needed(runs: Sequence[RunConfig]) -> list[RunConfig]:
    """The distinct pretrainings of `runs`, in a stable order."""
    found: dict[str, RunConfig] = {}
    for run in runs:
        pre = pretraining_of(run)
        if pre is not None:
            found.setdefault(pre.run_id, pre)
    return [found[k] for k in sorted(found)]


def start_of(run: RunConfig, sweep: Path) -> tuple[Path | None, bool]:
    """Where a fresh start of `run` takes its parameters, and whether only the encoder."""
    pre = pretraining_of(run)
    if pre is not None:
        return folder_of(sweep, pre), run.pretrain.reset_decoder
    if run.init.from_:
        return Path(run.init.from_).expanduser(), False
    return None, False


def check_source(run: RunConfig, sweep: Path) -> None:
    """`init.from` must name parameters that exist before anything trains (one line)."""
    source, _ = start_of(run, sweep)
    if source is None or pretraining_of(run) is not None:
        return
    path = source / schema.MODEL_FILE if source.is_dir() else source
    if not path.is_file():
        raise SpecError(
            "init.from", f"{path} does not exist (a complete run folder has {schema.MODEL_FILE})"
        )
