"""Learning-rate decay on a validation plateau, with the best model reloaded (`train.lr_decay:
plateau`), as the text-VAE papers train: He et al. 2019 (jxhe/vae-lagging-encoder `text.py`) and
Li et al. 2019 (bohanli/vae-pretraining-encoder) keep `opt_dict = {not_improved, lr, best_loss}`
and after each epoch's validation loss (−ELBO)

    if loss > best_loss:
        not_improved += 1
        if not_improved >= decay_epoch and epoch >= 15:
            best_loss = loss; not_improved = 0; lr *= lr_decay
            reload the best model; build fresh optimizers; decay_cnt += 1
    else:
        not_improved = 0; best_loss = loss
    if decay_cnt == max_decay: stop

with decay_epoch 2, lr_decay 0.5, max_decay 5. `best_loss` here is the last epoch that did not
count as a plateau (a decay resets it to the current, worse loss), not the best model's, which is
kept apart (`selection`). Each run of a pack keeps its own state, so its learning rate, reloads
and stop do not depend on its pack.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from freebits_cli.spec import TrainSpec


@dataclass
class Plateau:
    """One run's plateau state: its learning-rate scale and the counters of the rule above."""

    scale: float = 1.0
    decays: int = 0
    not_improved: int = 0
    best_loss: float = math.inf

    def record(self) -> dict[str, Any]:
        """The checkpoint record."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Plateau:
        return cls(**record) if record else cls()


def after_epoch(state: Plateau, valid_elbo: float, epoch: int, train: TrainSpec) -> bool:
    """Apply the rule to `state` after 1-based `epoch` with its validation ELBO; True when the run
    decays now (reload its best model, start its optimizer afresh at lr · scale)."""
    loss = -valid_elbo
    if not loss > state.best_loss:
        state.not_improved, state.best_loss = 0, loss
        return False
    state.not_improved += 1
    if state.not_improved < train.lr_patience or epoch <= train.lr_decay_start:
        return False
    state.best_loss, state.not_improved = loss, 0
    state.scale *= train.lr_factor
    state.decays += 1
    return True


def stopped(state: Plateau, train: TrainSpec) -> bool:
    """Whether the run has decayed `lr_max_decays` times: its training ends."""
    return train.lr_decay == "plateau" and state.decays >= train.lr_max_decays


def ends_now(state: Plateau, row: dict[str, Any], epoch: int, train: TrainSpec) -> bool:
    """Whether the rule, applied after `epoch` to the epoch's metrics row, will stop the run
    (`state` itself is left as it is)."""
    if row.get("valid_elbo") is None:
        return False
    peek = copy.copy(state)
    after_epoch(peek, row["valid_elbo"], epoch, train)
    return stopped(peek, train)


@torch.no_grad()
def reload_best(
    model: torch.nn.Module, optimizer: Any, index: int, best: dict[str, Any], scale: float
) -> None:
    """Member `index` back at its best parameters (`selection.snapshot`), its optimizer state
    fresh and its learning rate scaled by `scale` (a `step.MemberOptimizer`)."""
    for name, param in model.named_parameters():
        param[index].copy_(best["params"][name])
    optimizer.reset_member(index)
    optimizer.lr_scales[index] = scale
