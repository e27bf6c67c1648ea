"""A user's own VAE class, packed: K copies of its parameters stacked on a leading axis.

The contract (README, "Your own model"): `Class(input_shape, latent_dim, outputs, **kwargs)` is
an `nn.Module` without buffers whose `encode(x)` maps a batch (B, *input_shape) to (μ, log σ²),
each (B, latent_dim), and whose `decode(z)` maps (B, latent_dim) to the likelihood's parameters,
any shape with B·outputs·P elements, read as `outputs` blocks of the P pixels (C, H, W order).
On text (README, "Text"), `input_shape` is (T,), `outputs` the vocabulary size V, `encode(x)` gets
token ids (B, T) (0 pads the end of a sentence) and `decode(z, x)` returns next-token logits
(B, T, V): position t predicts x[:, t] from z and x[:, :t] (the decoder's input is `<s>` = 1 then
x shifted right by one).
Each member runs its own slice through the module with `torch.func.functional_call` (CPU: bit
for bit a lone module) or all members at once with `torch.func.vmap` (CUDA); see `packing`.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..errors import SpecError
from . import packing
from .likelihoods import Likelihood


def load_class(path: str) -> type[nn.Module]:
    """`package.module:Class` -> the class; SpecError (one line) when it cannot be had."""
    module_name, _, attr = path.partition(":")
    if os.getcwd() not in sys.path:  # a module beside the spec, as with `python -m`
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise SpecError("model.module", f"cannot import {module_name!r} ({why})") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        what = "has no attribute" if cls is None else "has no nn.Module class"
        raise SpecError("model.module", f"{module_name!r} {what} {attr!r}")
    return cls


class _Call(nn.Module):
    """Routes functional_call to the user's encode or decode (functional_call calls forward)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, method: str, *args: torch.Tensor) -> Any:
        return getattr(self.inner, method)(*args)


class PackedModule(nn.Module):
    """K copies of a user's module; the trainer sees the same interface as the built-in VAEs."""

    def __init__(
        self,
        members: int,
        path: str,
        shape: Sequence[int],
        latent_dim: int,
        lik: Likelihood,
        kwargs: dict[str, Any],
        vocab_size: int = 0,
    ) -> None:
        super().__init__()
        self.path, self.kwargs, self.shape = path, dict(kwargs), tuple(shape)
        self.members, self.latent_dim, self.likelihood = members, latent_dim, lik
        self.vocab_size = vocab_size
        self.outputs = vocab_size or lik.outputs
        self.input_dim = math.prod(self.shape)
        self.cls = load_class(path)
        template = self._construct()
        if any(True for _ in template.buffers()):
            raise SpecError(
                "model.module",
                f"{path} has buffers (e.g. BatchNorm statistics): packed runs keep parameters "
                "only, and BatchNorm makes test metrics depend on train/eval mode",
            )
        self.names = [name for name, _ in template.named_parameters()]
        self.stacked = nn.ParameterList(
            nn.Parameter(p.detach().unsqueeze(0).repeat(members, *[1] * p.dim()))
            for _, p in template.named_parameters()
        )
        # The template only lends its code: kept out of the parameters (no optimizer state).
        self.__dict__["caller"] = _Call(template)

    def _construct(self) -> nn.Module:
        try:
            return self.cls(
                input_shape=self.shape,
                latent_dim=self.latent_dim,
                outputs=self.outputs,
                **self.kwargs,
            )
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise SpecError("model.module", f"{self.path}(...) failed: {why}") from None

    def reset(self, generators: Sequence[torch.Generator]) -> None:
        """Each member's initialisation is the module's own, run under its member's init seed."""
        with torch.no_grad():
            for k, gen in enumerate(generators):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(gen.initial_seed())
                    fresh = dict(self._construct().named_parameters())
                for name, param in zip(self.names, self.stacked, strict=True):
                    param[k].copy_(fresh[name])

    def _run(self, method: str, *args: torch.Tensor) -> Any:
        """Member k's module on args[i][k], for all k: outputs stacked on a leading K axis."""
        names = [f"inner.{n}" for n in self.names]
        if packing.batched(args[0].device):

            def one(params: tuple[torch.Tensor, ...], *xs: torch.Tensor) -> Any:
                return functional_call(
                    self.caller, dict(zip(names, params, strict=True)), (method, *xs)
                )

            return vmap(one)(tuple(self.stacked), *args)
        outs = [
            functional_call(
                self.caller,
                {n: p[k] for n, p in zip(names, self.stacked, strict=True)},
                (method, *(a[k] for a in args)),
            )
            for k in range(args[0].shape[0])
        ]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outs, strict=True))
        return torch.stack(outs)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, B, P) -> μ, log σ², each (K, B, D)."""
        k, b = x.shape[:2]
        if self.vocab_size:  # token ids (K, B, T), T up to the batch's longest sentence
            return self._run("encode", x)
        mu, logvar = self._run("encode", x.reshape(k, b, *self.shape))
        return mu, logvar

    def decode(
        self, z: torch.Tensor, x: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(K, B, D) -> likelihood parameters (K, B, Q·P); text: logits (K, B, T, V) of x."""
        k, b = z.shape[:2]
        if self.vocab_size:
            assert x is not None, "a text decoder reads the sentence it scores"
            return self._run("decode", z, x).reshape(*x.shape, self.vocab_size)
        return self._run("decode", z).reshape(k, b, -1)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood.nll(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(params)

    def check(self) -> None:
        """Run a batch of 2 through the module and name what its outputs get wrong (SpecError)."""
        dtype = torch.long if self.vocab_size else torch.float32
        x = torch.zeros(1, 2, self.input_dim, dtype=dtype)
        if self.vocab_size:
            x[..., 0] = 2  # a sentence of one token, `</s>`
        expect_z = f"each (B, latent_dim) = (2, {self.latent_dim})"
        try:
            out = self._run("encode", x.reshape(1, 2, *self.shape))
        except Exception as exc:
            raise SpecError("model.module", f"{self.path}.encode failed: {_why(exc)}") from None
        shapes = _shapes(out)
        if not (isinstance(out, tuple) and len(out) == 2) or any(
            s != (1, 2, self.latent_dim) for s in shapes
        ):
            got = [s[1:] for s in shapes] if isinstance(out, tuple) else shapes[0][1:]
            raise SpecError(
                "model.module",
                f"{self.path}.encode must return (mu, logvar), {expect_z}; got {got}",
            )
        try:
            z = torch.zeros(1, 2, self.latent_dim)
            params = self._run("decode", z, x) if self.vocab_size else self._run("decode", z)
        except Exception as exc:
            raise SpecError("model.module", f"{self.path}.decode failed: {_why(exc)}") from None
        want = self.outputs * self.input_dim
        if (
            not isinstance(params, torch.Tensor)
            or params.shape[1] != 2
            or params[0, 0].numel() != want
        ):
            raise SpecError(
                "model.module",
                f"{self.path}.decode must return (B, ...) with {self.outputs}·"
                f"{self.input_dim} = {want} values per example for {self.likelihood.name}; "
                f"got {tuple(_shapes(params)[0][1:])}",
            )


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:160]


def _shapes(out: Any) -> list[tuple[int, ...]]:
    items: Sequence[Any] = out if isinstance(out, tuple) else (out,)
    return [tuple(t.shape) if isinstance(t, torch.Tensor) else () for t in items]
