"""How a pack runs its members through convolutions and user modules: the one place that chooses.

- CPU: each member's slice of the stacked parameters runs on its own (a loop over K). The kernels
  then see exactly the shapes a lone model sees, so a member's numbers are bit-identical to a
  pack of one (`--pack-size 1`), whatever its pack. On a CPU this was as fast as batching: the
  work per member is large enough that K calls cost little more than one.
- CUDA: one batched kernel for the whole pack: grouped convolution with groups = K (what
  `torch.func.vmap` lowers a batched conv to, PyTorch's BatchRulesConvolution.cpp) and `vmap`
  over a user's module. One launch instead of K keeps a GPU busy; sums run in another order, so
  packed and alone agree to float rounding (not bit for bit).

Noise never comes from here: each member's noise is drawn outside the model from its own stream
(`vmap(randomness="different")` would draw every member from one generator by position).
"""

from __future__ import annotations

import torch


def batched(device: torch.device) -> bool:
    """True where a pack runs as one batched kernel (CUDA), False for a loop over members (CPU)."""
    return device.type == "cuda"
