"""Packed VAE families: K runs as one model whose parameters carry a leading K axis.

Every model takes flat data (K, B, P) and offers `encode(x) -> (μ, log σ²)` each (K, B, D),
`decode(z) -> likelihood parameters`, `nll(params, x) -> (K, B)` and `mean(params) -> (K, B, P)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..spec import ModelSpec
from .mlp import PackedVAE


def build_model(spec: ModelSpec, image_shape: Sequence[int], members: int) -> PackedVAE:
    """The packed model a run's `model:` section asks for, for data of `image_shape`."""
    pixels = 1
    for size in image_shape:
        pixels *= size
    return PackedVAE(members, pixels, spec.hidden, spec.latent_dim, spec.activation)
