"""A pack of K small convolutional VAEs, without normalisation layers, as one model.

Layer specs after disentanglement_lib (Locatello et al. 2019, `methods/shared/architectures.py`,
`conv_encoder` / `deconv_decoder`, the β-VAE nets of Higgins et al. 2017): encoder conv
32-32-64-64 with kernel 4 and stride 2, a dense layer of 256, then μ and log σ²; decoder dense 256,
dense to the last feature map, then transposed convolutions mirroring the encoder back to the
image. Scaled to small images: padding 1 makes each layer halve H and W (32 → 16 → 8 → 4 → 2,
28 → 14 → 7 → 3 → 1, 8 → 4 → 2), and each transposed layer's output padding restores the odd
sizes exactly. No BatchNorm (it would make the test ELBO depend on train/eval mode).
With `latent_maps: c` the latent is instead c feature maps on the encoder's last grid, from a
1×1 convolution (IAF, Kingma et al. 2016); z is flattened map by map, so free-bits group g of
`groups: c` is exactly feature map g.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SpecError
from .likelihoods import Likelihood
from .mlp import ACTIVATIONS, PackedLinear

KERNEL, STRIDE, PADDING = 4, 2, 1


class PackedConv2d(nn.Module):
    """K independent (transposed) convolutions: (K, B, C, H, W) -> (K, B, C', H', W')."""

    def __init__(
        self,
        members: int,
        fan_in: int,
        fan_out: int,
        kernel: int = KERNEL,
        stride: int = STRIDE,
        padding: int = PADDING,
        transposed: bool = False,
        output_padding: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.transposed, self.output_padding = transposed, output_padding
        # PyTorch's layouts: conv (out, in, k, k), transposed conv (in, out, k, k).
        shape = (fan_in, fan_out) if transposed else (fan_out, fan_in)
        self.weight = nn.Parameter(torch.empty(members, *shape, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(members, fan_out))

    def reset(self, generators: Sequence[torch.Generator]) -> None:
        """nn.Conv2d's default init, U(±1/√fan_in), fan_in = weight.size(1)·k² as PyTorch counts
        it (for a transposed conv that is its output channels), drawn per member."""
        bound = 1.0 / math.sqrt(self.weight.shape[2] * self.kernel**2)
        with torch.no_grad():
            for k, gen in enumerate(generators):
                self.weight[k].uniform_(-bound, bound, generator=gen)
                self.bias[k].uniform_(-bound, bound, generator=gen)

    def _conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int
    ) -> torch.Tensor:
        if self.transposed:
            return F.conv_transpose2d(
                x, weight, bias, self.stride, self.padding, self.output_padding, groups
            )
        return F.conv2d(x, weight, bias, self.stride, self.padding, 1, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch = x.shape[:2]
        # One grouped convolution: member k's channels form group k. (On a CPU members arrive one
        # at a time, see `packing`, and this is a plain convolution.)
        grouped = x.transpose(0, 1).reshape(batch, -1, *x.shape[-2:])
        weight = self.weight.reshape(-1, *self.weight.shape[2:])
        y = self._conv(grouped, weight, self.bias.reshape(-1), members)
        return y.reshape(batch, members, -1, *y.shape[-2:]).transpose(0, 1)


def feature_sizes(height: int, width: int, layers: int) -> list[tuple[int, int]]:
    """Spatial size before each encoder layer and after the last: 28×28, 3 layers -> 28, 14, 7, 3."""
    sizes = [(height, width)]
    for _ in range(layers):
        h, w = sizes[-1]
        sizes.append(
            ((h + 2 * PADDING - KERNEL) // STRIDE + 1, (w + 2 * PADDING - KERNEL) // STRIDE + 1)
        )
    return sizes


class PackedConvVAE(nn.Module):
    """Conv encoder q(z|x) = N(μ, diag σ²), N(0, I) prior, transposed-conv decoder p(x|z)."""

    def __init__(
        self,
        members: int,
        shape: Sequence[int],
        channels: Sequence[int],
        dense: int,
        latent_dim: int,
        latent_maps: int,
        activation: str,
        lik: Likelihood,
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.members, self.shape, self.likelihood = members, (c, h, w), lik
        self.input_dim, self.latent_dim, self.latent_maps = c * h * w, latent_dim, latent_maps
        self.act = ACTIVATIONS[activation]
        self.sizes = feature_sizes(h, w, len(channels))
        last, (fh, fw) = channels[-1], self.sizes[-1]
        if fh < 1 or fw < 1:
            raise SpecError(
                "model.channels",
                f"{len(channels)} stride-2 layers shrink {h}×{w} images below 1×1; use fewer",
            )
        if latent_maps and latent_dim != latent_maps * fh * fw:
            raise SpecError(
                "model.latent_dim",
                f"must be latent_maps·H·W = {latent_maps}·{fh}·{fw} = {latent_maps * fh * fw} "
                f"for {len(channels)} conv layers on {h}×{w} images, got {latent_dim}",
            )
        self.flat = last * fh * fw
        ins = [c, *channels[:-1]]
        self.encoder = nn.ModuleList(
            PackedConv2d(members, a, b) for a, b in zip(ins, channels, strict=True)
        )
        decoder = []
        for i in reversed(range(len(channels))):
            (th, tw), (sh, sw) = self.sizes[i], self.sizes[i + 1]
            out = channels[i - 1] if i else c * lik.outputs
            pad = (th - STRIDE * sh, tw - STRIDE * sw)  # output size 2·in + padding = target
            decoder.append(
                PackedConv2d(members, channels[i], out, transposed=True, output_padding=pad)
            )
        self.decoder = nn.ModuleList(decoder)
        if latent_maps:
            self.to_stats: nn.Module = PackedConv2d(members, last, 2 * latent_maps, 1, 1, 0)
            self.from_z: nn.Module = PackedConv2d(members, latent_maps, last, 1, 1, 0)
            self.dense_layers: list[nn.Module] = [self.to_stats, self.from_z]
        else:
            self.enc_dense = PackedLinear(members, self.flat, dense)
            self.to_stats = PackedLinear(members, dense, 2 * latent_dim)
            self.from_z = PackedLinear(members, latent_dim, dense)
            self.to_maps = PackedLinear(members, dense, self.flat)
            self.dense_layers = [self.enc_dense, self.to_stats, self.from_z, self.to_maps]

    def reset(self, generators: Sequence[torch.Generator]) -> None:
        for layer in [*self.encoder, *self.dense_layers, *self.decoder]:
            layer.reset(generators)  # type: ignore[operator]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B, P) -> μ, log σ², each (K, B, D)."""
        k, b = x.shape[:2]
        h = x.reshape(k, b, *self.shape)
        for layer in self.encoder:
            h = self.act(layer(h))
        if self.latent_maps:
            mu, logvar = self.to_stats(h).chunk(2, dim=2)  # (K, B, c, h, w) each
            return mu.reshape(k, b, -1), logvar.reshape(k, b, -1)
        h = self.act(self.enc_dense(h.reshape(k, b, self.flat)))
        mu, logvar = self.to_stats(h).chunk(2, dim=-1)
        return mu, logvar

    def decode(
        self, z: torch.Tensor, x: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(K, B, D) -> likelihood parameters (K, B, Q·P), Q blocks of C×H×W."""
        k, b = z.shape[:2]
        fh, fw = self.sizes[-1]
        if self.latent_maps:
            h = self.act(self.from_z(z.reshape(k, b, self.latent_maps, fh, fw)))
        else:
            h = self.act(self.to_maps(self.act(self.from_z(z))))
            h = h.reshape(k, b, -1, fh, fw)
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = self.act(h)
        return h.reshape(k, b, -1)  # channel q·C + c is parameter q of channel c

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.nll(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(params)
