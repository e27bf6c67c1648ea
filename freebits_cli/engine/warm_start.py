"""Start a run from given parameters: a finished run's `model.pt` (`init.from`, or the pretraining
it depends on, Li et al. 2019) or a run's checkpoint, put into one member of a fresh pack.

Every complete run saves its final parameters (`save_model`); with `eval.select: best_valid` the
parameters of its best validation epoch too, and a warm start takes those (Li et al. load their
best autoencoder). With a decoder reset only the encoder is copied — the parameters `encode`
reads, found from the autograd graph, so it holds for every architecture and a user's module —
and the decoder keeps the fresh initialisation the run drew from its own stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from freebits_cli import schema
from freebits_cli.errors import SpecError
from freebits_cli.results import storage

Params = dict[str, torch.Tensor]


def save_model(
    folder: Path, model: torch.nn.Module, index: int, best: dict[str, Any] | None
) -> None:
    """`model.pt` of member `index`: its parameters now, and its best validation ones if kept."""
    state: dict[str, Any] = {
        "params": {name: p.detach()[index].cpu().clone() for name, p in model.named_parameters()}
    }
    if best is not None:
        state["best_params"], state["best_epoch"] = best["params"], best["epoch"]
    storage.save_checkpoint(folder / schema.MODEL_FILE, state)


def read_params(source: str | Path, where: str = "init.from") -> Params:
    """The parameters a warm start copies from a run folder, a model.pt or a checkpoint.pt."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / schema.MODEL_FILE
    if not path.is_file():
        raise SpecError(
            where, f"{path} does not exist (a complete run folder has {schema.MODEL_FILE})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a torn or foreign file
        why = f"{type(exc).__name__}: {exc}".splitlines()[0][:100]
        raise SpecError(where, f"{path} cannot be read ({why})") from None
    params = state.get("best_params") or state.get("params") if isinstance(state, dict) else None
    if not isinstance(params, dict) or not all(
        isinstance(v, torch.Tensor) for v in params.values()
    ):
        raise SpecError(where, f"{path} holds no parameters of a freebits run")
    return params


def check_shapes(
    model: torch.nn.Module, params: Params, source: str, where: str = "init.from"
) -> None:
    """Refuse (one line) parameters that do not fit the run's model, naming the first mismatch."""
    own = {name: tuple(p.shape[1:]) for name, p in model.named_parameters()}
    missing = sorted(set(own) - set(params))
    extra = sorted(set(params) - set(own))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which this model lacks"
        raise SpecError(where, f"{source} does not fit this run's model: it {what}")
    for name, shape in own.items():
        if tuple(params[name].shape) != shape:
            raise SpecError(
                where,
                f"{source} does not fit this run's model: {name} is "
                f"{tuple(params[name].shape)}, the model's is {shape}",
            )


def encoder_names(model: Any, x: torch.Tensor) -> set[str]:
    """The parameters μ and log σ² depend on (the inference network), read off the autograd graph
    of one encoding of `x` (K, b, P)."""
    named = dict(model.named_parameters())
    with torch.enable_grad():
        mu, logvar = model.encode(x)
        grads = torch.autograd.grad(
            (mu.sum() + logvar.sum()), list(named.values()), allow_unused=True
        )
    return {name for name, grad in zip(named, grads, strict=True) if grad is not None}


@torch.no_grad()
def warm_start(
    model: torch.nn.Module, index: int, params: Params, names: Sequence[str] | set[str] | None
) -> None:
    """Copy `params` (all, or only `names`) into member `index` of a packed model."""
    for name, param in model.named_parameters():
        if names is None or name in names:
            param[index].copy_(params[name].to(param.device, param.dtype))
