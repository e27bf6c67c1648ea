"""How a pack runs its members: as one batched model, or member by member. The one place that chooses.

- CUDA: the whole pack as one model — batched matmuls, grouped convolutions with groups = K (what
  `torch.func.vmap` lowers a batched conv to, PyTorch's BatchRulesConvolution.cpp), `vmap` over a
  user's module: one launch instead of K keeps a GPU busy. Sums run in another order than a lone run's, so packed and alone
  agree to float rounding, not bit for bit.
- CPU: member by member (`member_views`). Element-wise kernels take a vector path for most elements
  of a tensor and a scalar path for the last few, and transcendental functions (exp, log1p, tanh)
  can differ by an ulp between the two. In a stacked (K, …) tensor a member's last elements may
  land on the vector path where alone they take the scalar one, so its numbers would depend on
  its pack. Run one member at a time, every kernel sees exactly the shapes a lone run sees: a
  member's numbers are bit-identical to a pack of one (`--pack-size 1`), whatever its pack. The
  work per member is large enough on a CPU that K calls cost little more than one.

Noise never comes from here: each member's noise is drawn outside the model from its own stream
(`vmap(randomness="different")` would draw every member from one generator by position).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call


def batched(device: torch.device) -> bool:
    """True where a pack runs as one batched model (CUDA), False member by member (CPU)."""
    return device.type == "cuda"


class _Method(nn.Module):
    """`model.<name>(...)` as a module's forward, so `functional_call` can run any method."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args: Any) -> Any:
        return getattr(self.model, self.name)(*args)


class MemberView:
    """Member k of a packed model as a pack of one: the model run on its own parameter slices.

    Has what the trainer and the metrics use of a model: `encode`, `decode`, `nll`, `mean`,
    `members` (1), `input_dim`, `latent_dim`; inputs and outputs keep a leading axis of size 1.
    """

    members = 1

    def __init__(self, model: Any, params: dict[str, torch.Tensor], index: int = 0) -> None:
        self.model, self.params, self.index = model, params, index

    def __getattr__(self, name: str) -> Any:
        """The model's plain attributes (`input_dim`, `latent_dim`, `noise_width`, …)."""
        if name in ("model", "params", "index"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def _call(self, name: str, *args: Any) -> Any:
        return functional_call(_Method(self.model, name), self.params, args)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._call("encode", x)

    def decode(
        self, z: torch.Tensor, x: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._call("decode", z, x, noise)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.model.nll(params, x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.model.mean(params)


def member_leaves(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Each member's slice of each stacked parameter as a leaf of its own, sharing its storage.

    Training through these, autograd leaves each member's gradient on its own leaf: no step ever
    stacks K gradients into one tensor (which `unbind` would, a full copy of the weights per step).
    An optimizer that updates the stacked parameters in place updates the leaves with them; a
    parameter that takes no gradient (BN-VAE's running statistics, `mu_norm`) gives leaves that
    take none either."""
    return {
        name: [nn.Parameter(p.detach()[k], requires_grad=p.requires_grad) for k in range(len(p))]
        for name, p in model.named_parameters()
    }


def member_views(
    model: nn.Module, leaves: dict[str, list[nn.Parameter]] | None = None
) -> list[MemberView]:
    """One view per member: on its `leaves` when given (training), else on slices from `unbind`."""
    if leaves is None:
        leaves = {n: list(p.unbind(0)) for n, p in model.named_parameters()}
    members = len(next(iter(leaves.values())))
    return [
        MemberView(model, {f"model.{n}": ls[k].unsqueeze(0) for n, ls in leaves.items()}, k)
        for k in range(members)
    ]
