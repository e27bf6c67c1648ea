"""Packed VAE families: K runs as one model whose parameters carry a leading K axis.

Every model takes a pack's data (K, B, P) — images flat, text as token ids with P = T — and offers
`encode(x) -> (μ, log σ²)` each (K, B, D), `decode(z, x=None, noise=None) -> likelihood parameters`
((K, B, Q·P); text (K, B, T, V)), `nll(params, x) -> (K, B)` and `mean(params)`, with attributes
`members`, `input_dim` (P) and `latent_dim` (D). `decode` reads x where the decoder is
autoregressive (teacher forcing) and `noise` (K, B, T, `noise_width`) while training, when a model
declares a `noise_width` (dropout masks drawn from each member's own stream); image models ignore
both. One module per architecture (`mlp`, `conv`, `lstm`, a user's `module`), the likelihoods in
`likelihoods`, and how a pack runs per device in `packing`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from ..errors import SpecError
from ..spec import ModelSpec
from .conv import PackedConvVAE
from .likelihoods import Likelihood, likelihood
from .lstm import PackedLSTMVAE
from .mlp import PackedVAE
from .module import PackedModule
from .mu_norm import MuNormalised

if TYPE_CHECKING:
    from ..data import Dataset

__all__ = [
    "PackedConvVAE",
    "PackedLSTMVAE",
    "PackedModel",
    "PackedModule",
    "PackedVAE",
    "build_model",
]


class PackedModel(Protocol):
    """What the trainer and the metrics use of a packed model."""

    members: int
    input_dim: int
    latent_dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def decode(
        self, z: torch.Tensor, x: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor: ...
    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor: ...
    def mean(self, params: torch.Tensor) -> torch.Tensor: ...


def channels_first(image_shape: Sequence[int]) -> tuple[int, ...] | None:
    """(H, W) -> (1, H, W); (C, H, W) stays; a flat shape has no image layout: None."""
    if len(image_shape) == 2:
        return (1, *image_shape)
    if len(image_shape) == 3:
        return tuple(image_shape)
    return None


def _mlp(spec: ModelSpec, shape: Sequence[int], members: int, lik: Likelihood) -> torch.nn.Module:
    pixels = math.prod(shape)
    return PackedVAE(members, pixels, spec.hidden, spec.latent_dim, spec.activation, lik)


def _conv(spec: ModelSpec, shape: Sequence[int], members: int, lik: Likelihood) -> torch.nn.Module:
    image = channels_first(shape)
    if image is None:
        raise SpecError(
            "model.arch",
            f"conv needs images of shape (H, W) or (C, H, W); the data are {tuple(shape)}",
        )
    return PackedConvVAE(
        members,
        image,
        spec.channels,
        spec.dense,
        spec.latent_dim,
        spec.latent_maps,
        spec.activation,
        lik,
    )


def _lstm(
    spec: ModelSpec, shape: Sequence[int], members: int, lik: Likelihood, vocab: int
) -> torch.nn.Module:
    if not vocab:
        raise SpecError("model.arch", "lstm models token sequences; the data are images")
    return PackedLSTMVAE(
        members,
        vocab,
        math.prod(shape),
        spec.embedding_dim,
        spec.hidden,
        spec.latent_dim,
        spec.dropout,
        spec.word_dropout,
        spec.z_to,
        lik,
    )


#: `model.arch` -> builder(spec, example shape, members, likelihood, vocabulary size).
Builder = Callable[[ModelSpec, Sequence[int], int, Likelihood, int], torch.nn.Module]
ARCHITECTURES: dict[str, Builder] = {
    "mlp": lambda spec, shape, k, lik, _: _mlp(spec, shape, k, lik),
    "conv": lambda spec, shape, k, lik, _: _conv(spec, shape, k, lik),
    "lstm": _lstm,
}


def build_model(
    spec: ModelSpec, image_shape: Sequence[int], members: int, vocab_size: int = 0
) -> PackedVAE:
    """The packed model a run's `model:` section asks for, for examples of `image_shape` (text:
    (T,) token ids over a vocabulary of `vocab_size`)."""
    lik = likelihood(spec.likelihood, spec.mixtures)
    if spec.module:
        shape = (
            tuple(image_shape) if vocab_size else channels_first(image_shape) or tuple(image_shape)
        )
        model = PackedModule(
            members, spec.module, shape, spec.latent_dim, lik, spec.kwargs, vocab_size
        )
    else:
        model = ARCHITECTURES[spec.arch](spec, image_shape, members, lik, vocab_size)
    if spec.mu_bn_gamma:  # BN-VAE (Zhu et al. 2020): batch-normalised μ, fixed scale γ
        model = MuNormalised(model, spec.mu_bn_gamma)
    return model  # type: ignore[return-value]  # every family offers PackedModel's interface


def check_model(spec: ModelSpec, data: Dataset) -> None:
    """Refuse, before anything is written, a model that cannot run on `data` (SpecError, one line):
    a likelihood for 8-bit pixels on other data, Bernoulli on colour images that are not
    binarised, a conv net on flat data or too small images, a user module that fails its contract."""
    lik = likelihood(spec.likelihood, spec.mixtures)
    if lik.eight_bit and not data.eight_bit:
        raise SpecError(
            "model.likelihood",
            f"{spec.likelihood} models 8-bit pixels (0-255), but {data.name} holds other values "
            "(digits are 0-16; a float .npz is not 8-bit); use bernoulli, or uint8 data",
        )
    colour = len(data.image_shape) == 3 and data.image_shape[0] > 1
    if spec.likelihood == "bernoulli" and data.binarize == "none" and colour:
        raise SpecError(
            "model.likelihood",
            f"bernoulli on {data.name}'s colour 8-bit images without binarisation is no "
            "likelihood; use logistic, logistic_mixture or gaussian, or dataset.binarize",
        )
    model = build_model(spec, data.image_shape, 1, data.vocab_size)
    if isinstance(model, PackedModule):
        model.check()
