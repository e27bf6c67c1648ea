"""The order in which each member of a pack meets the training set, epoch by epoch.

Images: a permutation from the member's own data stream. Token sequences: that permutation sorted
by length within pools of `POOL_BATCHES` batches, cut into batches, and the full batches shuffled
(the pooled bucketing of Bowman et al. 2016's code and torchtext's BucketIterator), so the
sentences of a batch have similar lengths and padding stays small while every batch is still
random. The partial batch stays last, so every member of a pack takes full and partial steps
together. A step then reads each member's batch up to its longest sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Batches per pool whose sentences are sorted by length together.
POOL_BATCHES = 50
#: On a GPU a step's length is rounded up to a multiple of this, so a few CUDA graphs cover all.
GRAPH_LENGTH_STEP = 8


def permutations(
    n: int, generators: Sequence[torch.Generator], device: torch.device
) -> torch.Tensor:
    """(K, N): member k's permutation of the N training examples from its own data stream."""
    return torch.stack([torch.randperm(n, generator=g, device=device) for g in generators])


def by_length(
    order: torch.Tensor,
    lengths: np.ndarray,
    batch_size: int,
    generators: Sequence[torch.Generator],
    round_to: int = 1,
) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """Reorder each member's permutation into length-sorted pooled batches (see the module's
    docstring): the new (K, N) order and, per step, each member's batch length in tokens (rounded
    up to a multiple of `round_to`, at most the longest sentence)."""
    n = order.shape[1]
    full = n // batch_size
    # One draw per member for the order of its full batches, from its data stream (on the device).
    shuffles = [
        torch.randperm(full, generator=g, device=order.device).cpu().numpy() for g in generators
    ]
    width = int(lengths.max())
    pool = POOL_BATCHES * batch_size
    orders, step_lengths = [], []
    for perm, shuffle in zip(order.cpu().numpy(), shuffles, strict=True):
        pooled = np.concatenate(
            [
                chunk[np.argsort(-lengths[chunk], kind="stable")]
                for chunk in np.split(perm, range(pool, n, pool))
            ]
        )
        batches = np.split(pooled, range(batch_size, n, batch_size))
        batches = [batches[i] for i in shuffle] + batches[full:]
        orders.append(np.concatenate(batches))
        longest = [int(lengths[b].max()) for b in batches]
        step_lengths.append([min(width, -(-t // round_to) * round_to) for t in longest])
    new_order = torch.from_numpy(np.stack(orders)).to(order.device)
    return new_order, [tuple(per_step) for per_step in zip(*step_lengths, strict=True)]
