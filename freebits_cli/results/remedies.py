"""Which cures for posterior collapse a run uses, named from its config: the generalisation of the
seed text's strategies (baseline / annealing / free bits / both) to every remedy the spec offers.

A run's remedies are read from its config (config.json, as the dotted mapping `flat_config`
makes), so a remedy counts whether or not the sweep varied it. Fields a results folder of an
older version lacks take their defaults, which are no remedy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The remedies in the order names list them.
REMEDIES = (
    "pretraining",
    "warm start",
    "aggressive",
    "β < 1",
    "KL warm-up",
    "cyclical β",
    "free bits",
    "BN-VAE",
    "plateau LR",
)
PLAIN = "plain VAE"


def _number(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def remedies(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The remedies of a run (config as dotted field -> value), in `REMEDIES` order; free bits
    names its mode when it is not `batch` (e.g. `free bits (example_total)`)."""
    schedule = str(config.get("anneal.schedule", "none"))
    found = []
    if _number(config.get("pretrain.epochs")) > 0:
        found.append("pretraining")
    if config.get("init.from"):
        found.append("warm start")
    if config.get("train.aggressive") is True:
        found.append("aggressive")
    if schedule != "none" and _number(config.get("anneal.beta_max"), 1.0) < 1:
        found.append("β < 1")  # a β-VAE (constant), or an annealing that stops below 1
    if schedule in ("linear", "sigmoid"):
        found.append("KL warm-up")
    if schedule == "cyclical":
        found.append("cyclical β")
    if _number(config.get("free_bits.lambda")) > 0:
        mode = str(config.get("free_bits.mode", "batch"))
        found.append("free bits" if mode == "batch" else f"free bits ({mode})")
    if _number(config.get("model.mu_bn_gamma")) > 0:
        found.append("BN-VAE")
    if config.get("train.lr_decay", "none") == "plateau":
        found.append("plateau LR")
    return tuple(found)


def remedy_name(found: tuple[str, ...], common: tuple[str, ...] = ()) -> str:
    """`a + b + c`, leaving out those every compared run has (`common`); `plain VAE` if none."""
    shown = [r for r in found if r not in common]
    return " + ".join(shown) if shown else PLAIN
