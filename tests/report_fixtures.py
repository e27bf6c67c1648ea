"""Write fake run folders with known numbers, in the layout runs write (DESIGN.md, layout).

The report reads only these files, so its tests need no training: each helper writes exactly the
files a run of the given state would leave behind.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from freebits_cli.schema import METRICS_COLUMNS

METRIC_COLUMNS = list(METRICS_COLUMNS)
IMAGE_SHAPE = (4, 4)


def write_spec(sweep_dir: Path, grid: dict[str, list[Any]]) -> None:
    """A resolved spec.yaml (the report shows it as text only)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {sweep_dir.name}", "dataset: {name: digits, data_dir: null, binarize: none}"]
    lines += ["model: {hidden: [64], latent_dim: 4, activation: relu}", "grid:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in grid.items()]
    (sweep_dir / "spec.yaml").write_text("\n".join(lines) + "\n")


def write_run(
    sweep_dir: Path,
    lam: float,
    anneal: str = "none",
    seed: int = 0,
    *,
    state: str = "done",
    elbo: float = -100.0,
    kl: float = 10.0,
    active_units: float = 4,
    iwae: float | None = None,
    mi: float | None = None,
    binarize: str = "none",
    latent_dim: int = 4,
    epochs: int = 3,
    mode: str = "batch",
    extra: dict[str, Any] | None = None,
    samples: bool = True,
    reason: str = "loss is NaN at step 40",
) -> Path:
    """One run folder. Final metrics (last epoch and summary.json) are exactly the given numbers:
    test_elbo = elbo, test_kl = kl, test_recon = -elbo - kl. Earlier epochs are 1 nat worse each.
    state: done (summary.json), failed (failed.json; metrics stop early) or incomplete (neither).
    """
    setting: dict[str, Any] = {
        "free_bits.lambda": lam,
        "anneal.schedule": anneal,
        "train.seed": seed,
    }
    setting |= extra or {}
    run_id = f"lam{lam:g}-{anneal}-s{seed}" + "".join(f"-{v}" for v in (extra or {}).values())
    run_dir = sweep_dir / "runs" / run_id
    run_dir.mkdir(parents=True)
    config = {
        "dataset": {"name": "digits", "data_dir": None, "binarize": binarize},
        "model": {"hidden": [64], "latent_dim": latent_dim, "activation": "relu"},
        "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "seed": seed, "device": "cpu"},
        "free_bits": {"lambda": lam, "mode": mode, "groups": 1},
        "anneal": {"schedule": anneal, "warmup_epochs": 2, "beta_max": 1.0},
        "eval": {"au_threshold": 0.01, "iwae_samples": 10},
    }
    _json(
        run_dir / "config.json",
        {
            "run_id": run_id,
            "sweep": sweep_dir.name,
            "config": config,
            "setting": setting,
            "versions": {},
            "device": "cpu",
            "git_commit": None,
        },
    )
    last = epochs if state != "failed" else max(epochs - 1, 1)
    kl_dims = [kl / max(active_units, 1)] * int(active_units)
    kl_dims += [max(lam, 1e-5)] * (latent_dim - int(active_units))
    with (run_dir / "metrics.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(METRIC_COLUMNS)
        for e in range(1, last + 1):
            gap = epochs - e  # 1 nat per epoch below the final numbers
            out.writerow(
                [
                    run_id,
                    lam,
                    mode,
                    anneal,
                    seed,
                    binarize,
                    e,
                    e * 10,
                    min(1.0, e / 2),
                    -elbo + gap,
                    -elbo - kl + gap,
                    kl,
                    elbo - gap,
                    -elbo - kl + gap,
                    kl,
                    active_units,
                    active_units,
                    0.5,
                    1e-3,  # lr
                    iwae if (iwae is not None and e == epochs) else "",
                    mi if (mi is not None and e == epochs) else "",
                    "",  # test_bits_per_dim: not an image likelihood
                    "",  # test_iwae_bits_per_dim
                    "",  # test_ppl: not text
                    "",  # test_elbo_ppl
                    "",  # valid_elbo
                    e * 0.1,
                ]
            )
    with (run_dir / "kl_per_dim.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["epoch", "dim", "kl"])
        for e in range(1, last + 1):
            for d, v in enumerate(kl_dims):
                out.writerow([e, d, v * (1 + (epochs - e)) if d < active_units else v / e])
    common = {"run_id": run_id, "lambda": lam, "anneal": anneal, "seed": seed, "setting": setting}
    if state == "failed":
        _json(run_dir / "failed.json", common | {"reason": reason, "epoch": last + 1})
    if state == "done":
        _json(
            run_dir / "summary.json",
            common
            | {
                "sweep": sweep_dir.name,
                "free_bits_mode": mode,
                "latent_dim": latent_dim,
                "epochs": epochs,
                "dataset": "digits",
                "binarize": binarize,
                "test_elbo": elbo,
                "test_recon": -elbo - kl,
                "test_kl": kl,
                "active_units": active_units,
                "active_units_kl": active_units,
                "test_iwae_nll": iwae,
                "iwae_samples": 10,
                "test_mi": mi,
                "collapse_epoch": [None] * int(active_units)
                + [1] * (latent_dim - int(active_units)),
                "kl_per_dim": kl_dims,
                "seconds": 1.5,
                "device": "cpu",
            },
        )
        if samples:
            _samples(run_dir / "samples.npz", lam, seed)
    return run_dir


def _samples(path: Path, lam: float, seed: int) -> None:
    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    originals = np.random.default_rng(0).random((6, pixels)).astype(np.float32)  # same in all runs
    blur = min(lam / 2, 1.0)
    recon = ((1 - blur) * originals + blur * originals.mean()).astype(np.float32)
    prior = np.random.default_rng(seed + 1).random((6, pixels)).astype(np.float32)
    np.savez(
        path,
        originals=originals,
        reconstructions=recon,
        prior_samples=prior,
        image_shape=np.array(IMAGE_SHAPE),
    )


def _json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1))


def make_sweep(
    sweep_dir: Path,
    lambdas: Iterable[float],
    anneals: Iterable[str],
    seeds: Iterable[int],
    numbers: Callable[[float, str, int], dict[str, Any]],
    **kwargs: Any,
) -> list[Path]:
    """A full grid; numbers(λ, schedule, seed) gives write_run's keyword arguments for each run."""
    lambdas, anneals, seeds = list(lambdas), list(anneals), list(seeds)
    write_spec(sweep_dir, {"lambda": lambdas, "anneal": anneals, "seed": seeds})
    return [
        write_run(sweep_dir, lam, a, s, **(kwargs | numbers(lam, a, s)))
        for lam in lambdas
        for a in anneals
        for s in seeds
    ]
