"""What each member of a pack carries between epochs, and its checkpoint record.

A member owns named random streams (initialisation, data order, noise, binarisation,
dequantisation, dropout, evaluation) seeded from its own seed, so its numbers do not depend on
which pack it trained in. Its checkpoint holds its slice of the stacked weights and optimizer
state, its streams' states and its history: enough to resume it in the same pack, exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from freebits_cli.engine.plateau import Plateau
from freebits_cli.spec import RunConfig

STREAMS = ("data", "noise", "binarize", "dequantize", "dropout", "aggressive")


@dataclass
class Member:
    """One run inside a pack: its config, folder, and everything it carries between epochs."""

    run: RunConfig
    folder: Path
    setting: dict[str, Any]
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    kl_history: list[list[float]] = field(default_factory=list)
    kl_spread: list[float] = field(default_factory=list)  # last epoch's ½ Var_x μ_j per unit
    last_row: dict[str, Any] = field(default_factory=dict)
    #: This run's share of its pack's wall-clock time (the pack's epoch time / its members),
    #: so runs trained in packs of different sizes compare; `pack_seconds`: the pack's own time.
    seconds: float = 0.0
    pack_seconds: float = 0.0
    best: dict[str, Any] | None = None  # eval.select best_valid: see `selection`
    plateau: Plateau = field(default_factory=Plateau)  # train.lr_decay plateau: see `plateau`
    #: Where a fresh start takes its parameters (`warm_start`): a run folder, model.pt or
    #: checkpoint; None: the member's own initialisation.
    init_from: Path | None = None
    #: Copy only the encoder from `init_from`; the decoder is drawn afresh from the member's
    #: "reset" stream (Li et al. 2019's decoder reset after pretraining).
    encoder_only: bool = False
    #: Aggressive inference training (`aggressive`): still in the phase, and the held-out MI of
    #: the epoch before (He et al. 2019 start from 0).
    aggressive: bool = False
    previous_mi: float = 0.0


def stream_seed(seed: int, stream: str, epoch: int = 0) -> int:
    """A 63-bit seed for one named random stream of a run, stable across processes."""
    digest = hashlib.sha256(f"{seed}/{stream}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def save_states(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    members: Sequence[Member],
    indices: Sequence[int],
    device: torch.device,
    epoch: int,
) -> list[dict[str, Any]]:
    """Checkpoint records of `members` (at pack positions `indices`), from one device-to-host copy
    per tensor (not one per member and tensor): checkpoints are written every epoch, on the
    training path."""
    params, moments, steps, step = {}, {}, {}, 0.0
    for name, param in model.named_parameters():
        params[name] = param.detach().cpu()
        state = optimizer.state.get(param)
        if state:  # Adam's moments or SGD's momentum buffer; Adam's step counts
            moments[name] = {key: v.cpu() for key, v in state.items() if key != "step"}
            count = state.get("step")
            if isinstance(count, torch.Tensor) and count.dim():  # one per member (MemberAdam)
                steps[name] = count.cpu()
            elif count is not None:
                step = float(count)
    pack = [m.run.run_id for m in members]
    out = []
    for index, member in zip(indices, members, strict=True):
        out.append(
            {
                "device_type": device.type,
                "epoch": epoch,
                "pack": pack,  # who trained together: a resume rebuilds the same pack
                # clone(): a slice alone would save the whole pack's storage.
                "params": {name: p[index].clone() for name, p in params.items()},
                "adam": {
                    name: {key: v[index].clone() for key, v in m.items()}
                    for name, m in moments.items()
                },
                "adam_step": float(step),
                "adam_steps": {name: float(c[index]) for name, c in steps.items()},
                "aggressive": [member.aggressive, member.previous_mi],
                "generators": {s: g.get_state() for s, g in member.generators.items()},
                "kl_history": torch.tensor(member.kl_history, dtype=torch.float64),
                "kl_spread": torch.tensor(member.kl_spread, dtype=torch.float64),
                "last_row": member.last_row,
                "seconds": member.seconds,
                "pack_seconds": member.pack_seconds,
                "best": member.best,
                "plateau": member.plateau.record(),
            }
        )
    return out


def load_states(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    members: Sequence[Member],
    states: Sequence[dict[str, Any] | None],
    device: torch.device,
    adam: bool,
) -> int:
    """Put checkpoint records (all of one epoch) into a freshly built pack; returns that epoch."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            for i, state in enumerate(states):
                if state is not None:
                    param[i].copy_(state["params"][name])
            saved = states[0]["adam"].get(name) if states[0] is not None else None
            if saved:  # the optimizer's state ("adam" names Adam's and SGD's alike)
                entry = {
                    key: torch.stack([s["adam"][name][key] for s in states]).to(device)  # type: ignore[index]
                    for key in saved
                }
                if adam:  # fused Adam keeps its step counts as float32 tensors beside the weights
                    entry["step"] = _steps(optimizer, name, states, device)
                optimizer.state[param] = entry
    for member, state in zip(members, states, strict=True):
        assert state is not None
        member.generators = {}
        for stream, rng_state in state["generators"].items():
            member.generators[stream] = torch.Generator(device=device)
            member.generators[stream].set_state(rng_state)
        member.kl_history = state["kl_history"].tolist()
        spread = state.get("kl_spread")  # absent from checkpoints of earlier versions
        member.kl_spread = spread.tolist() if spread is not None else []
        member.last_row = dict(state["last_row"])
        member.seconds = float(state["seconds"])
        # Checkpoints of earlier versions kept the pack's time in "seconds".
        member.pack_seconds = float(state.get("pack_seconds", member.seconds))
        member.best = state.get("best")
        member.plateau = Plateau.from_record(state.get("plateau"))
        if "aggressive" in state:
            member.aggressive, member.previous_mi = (
                bool(state["aggressive"][0]),
                float(state["aggressive"][1]),
            )
    first = states[0]
    assert first is not None
    return int(first["epoch"])


def _steps(
    optimizer: torch.optim.Optimizer,
    name: str,
    states: Sequence[dict[str, Any] | None],
    device: torch.device,
) -> torch.Tensor:
    """Adam's step count of parameter `name`: (K,), one per member, for an optimizer that counts
    per member (`MemberAdam`), else the pack's one count."""
    if not getattr(optimizer, "member_steps", False):
        return torch.tensor(states[0]["adam_step"], dtype=torch.float32, device=device)  # type: ignore[index]
    counts = [
        s["adam_steps"].get(name, s["adam_step"]) if "adam_steps" in s else s["adam_step"]  # type: ignore[operator]
        for s in states
    ]
    return torch.tensor(counts, dtype=torch.float32, device=device)
