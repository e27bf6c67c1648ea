"""Aggressive inference-network training (He et al. 2019, "Lagging inference networks and
posterior collapse", jxhe/vae-lagging-encoder `text.py` / `image.py` with `--aggressive 1`).

While a run is in its aggressive phase, before each full update its encoder alone takes up to
`train.aggressive_steps` steps — the first on the update's own batch, then on fresh random
batches — and leaves that inner loop when the mean training loss of its last 15 inner steps
(per predicted token for text, per example for images) is higher than that of the 15 before
(He et al.'s `burn` loop: `burn_pre_loss - burn_cur_loss < 0`, checked every 15, starting from
1e4). The full update that follows computes every gradient but moves only the decoder. After each
epoch of the phase the held-out MI is compared with the epoch before (starting from 0); the first
epoch whose MI is lower ends the phase for that run (`cur_mi - pre_mi < 0`), and the run trains
as a plain one from then on.

In a pack each member has its own phase and inner loop: the steps train only the members still
in their loop (`step.Update`), every inner batch, noise and dropout draw comes from the member's
own "aggressive" stream, and the optimizers count steps per member, so a member's numbers are
those it has alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from freebits_cli.engine.step import Update

#: The trainer (`train.PackTrainer`, not imported here: it imports this module).
PackTrainer = Any

#: He et al. compare the encoder's loss every 15 inner steps.
CHECK_EVERY = 15
#: The loss their loop starts comparing against.
START_LOSS = 1e4


def inner_loop(trainer: PackTrainer, index: torch.Tensor, active: Sequence[int]) -> list[int]:
    """Encoder-only steps of the `active` members before the update on batch `index` (K, b);
    returns the steps each member of the pack took (0 for the others)."""
    step_fn, k_all = trainer.step, len(trainer.members)
    cap = trainer.config.train.aggressive_steps
    taken = [0] * k_all
    previous = dict.fromkeys(active, START_LOSS)
    total = torch.zeros(k_all, dtype=torch.float64, device=trainer.device)
    count = torch.zeros(k_all, dtype=torch.float64, device=trainer.device)
    in_loop, sub_iter = list(active), 1
    while in_loop and sub_iter <= cap:
        own = index if sub_iter == 1 else None  # He et al.: the first inner step on the batch
        rows, lengths, units = _fill(trainer, in_loop, own)
        losses = step_fn.inner(rows, lengths, Update(tuple(in_loop), frozenset(in_loop)))
        chosen = torch.tensor(in_loop, device=trainer.device)
        total.index_add_(0, chosen, losses.double() * rows)
        count.index_add_(0, chosen, units.double())
        for k in in_loop:
            taken[k] += 1
        if sub_iter % CHECK_EVERY == 0:
            current = (total / count.clamp(min=1)).tolist()
            leaving = {k for k in in_loop if previous[k] - current[k] < 0}
            previous.update({k: current[k] for k in in_loop})
            total.zero_()
            count.zero_()
            in_loop = [k for k in in_loop if k not in leaving]
        sub_iter += 1
    return taken


def _fill(
    trainer: PackTrainer, members: Sequence[int], index: torch.Tensor | None
) -> tuple[int, tuple[int, ...] | None, torch.Tensor]:
    """Fill the step's buffers of `members` with a batch — their rows of `index`, or fresh random
    examples — and its noise, binarisation, dequantisation and dropout numbers, all from each
    member's "aggressive" stream. Returns the rows, each member's tokens (text) and the units the
    loss is averaged over per member ((len(members),): tokens for text, examples for images)."""
    step_fn, data, device = trainer.step, trainer.x_train, trainer.device
    rows = trainer.config.train.batch_size if index is None else index.shape[1]
    rows = min(rows, trainer.n_train)
    pixels = data.shape[1]
    x, noise, masks = step_fn.batch(rows), step_fn.noise(rows), step_fn.masks(rows)
    lengths: list[int] = [1] * len(trainer.members)
    units = []
    for k in members:
        g = trainer.members[k].generators["aggressive"]
        if index is None:
            idx = torch.randperm(trainer.n_train, generator=g, device=device)[:rows]
        else:
            idx = index[k]
        torch.index_select(data, 0, idx, out=x[k])
        if trainer.dynamic:
            x[k].copy_(torch.rand(rows, pixels, generator=g, device=device) < x[k])
        if trainer.dequantize:
            u = torch.rand(rows, pixels, generator=g, device=device)
            x[k].copy_((torch.round(x[k] * 255) + u) / 256)
        noise[k].copy_(torch.randn(rows, noise.shape[-1], generator=g, device=device))
        if trainer.lengths is not None:
            lengths[k] = int(trainer.lengths[idx.cpu().numpy()].max())
            units.append((x[k] != 0).sum().double())
        else:
            units.append(torch.tensor(float(rows), dtype=torch.float64, device=device))
        if masks is not None:
            tokens = lengths[k] if trainer.lengths is not None else pixels
            fresh = torch.rand(rows, tokens, masks.shape[3], generator=g, device=device)
            masks[k, :, :tokens].copy_(fresh)
    text = trainer.lengths is not None
    return rows, tuple(lengths) if text else None, torch.stack(units)


def stop_rule(members: Sequence[Any], mi: Sequence[float]) -> list[float | None]:
    """After an epoch: each member in the phase compares its held-out MI with the epoch before
    and leaves the phase when it fell (He et al.: `if cur_mi - pre_mi < 0`). Returns the MI
    each member was judged on (None for members not in the phase)."""
    judged: list[float | None] = []
    for member, value in zip(members, mi, strict=True):
        if not member.aggressive:
            judged.append(None)
            continue
        judged.append(value)
        if value - member.previous_mi < 0:
            member.aggressive = False
        member.previous_mi = value
    return judged
