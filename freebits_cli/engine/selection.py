"""Model selection on a validation set (`eval.select: best_valid`), as the text-VAE papers do: each
run keeps its parameters from the epoch of its best validation ELBO (He et al. 2019 reload their
best checkpoint; Bowman et al. 2016 select on validation), and is scored there on the test set
beside its last epoch.

The best state travels with each run's checkpoint, so a resumed run selects exactly as an
uninterrupted one. Validation ELBOs come from each run's own evaluation stream, one per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def improved(best: dict[str, Any] | None, valid_elbo: float) -> bool:
    """Whether an epoch's validation ELBO beats the best so far (ties keep the earlier epoch)."""
    return best is None or valid_elbo > best["valid_elbo"]


def snapshot(model: torch.nn.Module, index: int, epoch: int, valid_elbo: float) -> dict[str, Any]:
    """Member `index`'s parameters now, on the host, with the epoch and its validation ELBO."""
    params = {name: p.detach()[index].cpu().clone() for name, p in model.named_parameters()}
    return {"epoch": epoch, "valid_elbo": valid_elbo, "params": params}


@torch.no_grad()
def load_best(model: torch.nn.Module, bests: Sequence[dict[str, Any]]) -> None:
    """Put each member's best parameters into a packed model of the same members."""
    for name, param in model.named_parameters():
        for index, best in enumerate(bests):
            param[index].copy_(best["params"][name])
