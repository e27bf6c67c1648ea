"""One optimisation step of a whole pack, close to the hardware.

The step reads its batch, noise and β from buffers allocated once, so its shapes never change and
nothing is allocated per step; the epoch's sums of the loss terms accumulate on the device, so an
epoch has no host synchronisation. On CUDA the full-batch step (forward, backward and a fused,
capturable Adam) is captured once in a CUDA graph and replayed: one launch per step instead of
hundreds, which is what a small VAE on a GPU waits on. Everywhere else — and for the last, partial
batch — the same step runs eagerly on the same buffers, so the graph's logic is the eager path's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from freebits_cli.engine.objective import gaussian_kl_per_dim
from freebits_cli.models import packing

#: (k, B, D) KL per example and dimension of the pack (None) or of one member (its index)
#: -> free-bits KL (k,) and binding share (k,).
FreeBits = Callable[[torch.Tensor, int | None], tuple[torch.Tensor, torch.Tensor]]
#: Order of the rows of `PackStep.sums`.
TERMS = ("loss", "recon", "kl", "binding")
#: Eager steps before capture, so lazily created state (Adam moments, autograd and library
#: workspaces) exists; they are undone, so capturing never changes a run's numbers.
WARMUP_STEPS = 3


def member_gradients(
    param: torch.Tensor, leaves: dict[torch.Tensor, list[torch.nn.Parameter]] | None
) -> list[torch.Tensor | None] | None:
    """Each member's gradient of a stacked parameter: from its own leaf where the step trains
    through leaves (see `packing.member_leaves`), else a slice of the stacked gradient; None for
    a member without one (not trained by this step), and None where no member has one."""
    if leaves is not None and param in leaves:
        grads = [leaf.grad for leaf in leaves[param]]
    elif param.grad is not None:
        grads = list(param.grad.unbind(0))
    else:
        return None
    return None if all(g is None for g in grads) else grads


@dataclass(frozen=True)
class Update:
    """Which members one step trains, and which of their parameters it moves (He et al. 2019's
    aggressive phase: an inner step moves only a member's encoder, the full step only its decoder).
    Members left out keep their parameters, optimizer state and step counts untouched."""

    members: tuple[int, ...]
    encoder_only: frozenset[int] = frozenset()
    decoder_only: frozenset[int] = frozenset()


class MemberOptimizer:
    """What the member-by-member optimizers share: gradients per member; the members (and which of
    their parameters) a step updates (`update`: aggressive training); each member's learning-rate
    scale (the plateau decay's lr·factor^n, one float per member, 1.0 until it decays: lr·1.0 is
    lr exactly); and a way to start one member's optimizer afresh. The update of member k uses
    lr = group lr · `lr_scales[k]`; members of equal lr share one kernel call, which updates each
    tensor on its own, so grouping never changes a member's numbers."""

    leaves: dict[torch.Tensor, list[torch.nn.Parameter]] | None = None
    lr_scales: list[float] | None = None
    #: This step's `Update`, None: every member, every parameter.
    update: Update | None = None
    #: ids of the stacked parameters of the encoder (read by `Update`'s encoder/decoder split).
    encoder: frozenset[int] = frozenset()
    #: Step counts per parameter and member (Adam): checkpoints save and load one per member.
    member_steps = False

    def scale(self, member: int) -> float:
        return 1.0 if self.lr_scales is None else self.lr_scales[member]

    def members_of(self, param: torch.Tensor, grads: list[torch.Tensor | None]) -> list[int]:
        """The members whose slice of `param` this step updates (those with a gradient)."""
        u = self.update
        chosen: list[int] | range = range(len(grads)) if u is None else u.members
        if u is not None:
            enc = id(param) in self.encoder
            chosen = [
                k
                for k in chosen
                if not (k in u.encoder_only and not enc) and not (k in u.decoder_only and enc)
            ]
        return [k for k in chosen if grads[k] is not None]

    @torch.no_grad()
    def reset_member(self, member: int) -> None:
        """Member `member`'s state as a fresh optimizer has it (He et al. 2019 and Li et al. 2019
        build new optimizers when they decay the learning rate): moments, momentum buffers and
        step counts at zero."""
        for state in self.state.values():  # type: ignore[attr-defined]
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    value[member].zero_()


class MemberAdam(MemberOptimizer, torch.optim.Adam):
    """torch's fused Adam over stacked parameters, each member's slice updated as its own tensor.

    Adam is element-wise, so one optimizer over the pack updates each member exactly as its own
    would (Kingma & Ba 2015) — in exact arithmetic. On a CPU the fused kernel takes a vector path
    for most elements and a scalar path for a tensor's last few, which round differently; handing
    it member k's slice (a view) as a tensor of its own gives it exactly the tensor a lone run has.
    The state is torch's own stacked moments, with one step count per parameter *and member*
    ((K,) float32: the bias correction of a member that skipped steps, as in aggressive training,
    is its own), so checkpoints and resume see an ordinary Adam per member. Gradients come from
    the members' leaves (`leaves`, see `packing.member_leaves`) where the step trains through
    them, else from the stacked gradient.
    """

    member_steps = True

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            batches: dict[float, tuple[list[torch.Tensor], ...]] = {}
            for param in group["params"]:
                member_grads = member_gradients(param, self.leaves)
                if member_grads is None:
                    continue
                state = self.state[param]
                if not state:  # as torch.optim.Adam initialises it (fused: float32 steps)
                    members = param.shape[0]
                    state["step"] = torch.zeros(members, dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                for k in self.members_of(param, member_grads):
                    slices = (
                        param[k],
                        member_grads[k],
                        state["exp_avg"][k],
                        state["exp_avg_sq"][k],
                        state["step"][k],  # a view: adam() counts it in place
                    )
                    lists = batches.setdefault(group["lr"] * self.scale(k), ([], [], [], [], []))
                    for into, tensor in zip(lists, slices, strict=True):
                        into.append(tensor)
            beta1, beta2 = group["betas"]
            for lr, (params, grads, moments, squares, steps) in batches.items():
                adam(
                    params,
                    grads,
                    moments,
                    squares,
                    [],
                    steps,
                    fused=True,
                    amsgrad=False,
                    beta1=beta1,
                    beta2=beta2,
                    lr=lr,
                    weight_decay=0.0,
                    eps=group["eps"],
                    maximize=False,
                )


class MemberSGD(MemberOptimizer, torch.optim.SGD):
    """torch's SGD (with momentum) over stacked parameters, each member's slice updated as its own
    tensor, for the reason `MemberAdam` gives. Momentum buffers start at zero, which with no
    dampening gives torch's first step (buffer = gradient) exactly."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            batches: dict[float, tuple[list[Any], list[Any], list[Any]]] = {}
            for param in group["params"]:
                member_grads = member_gradients(param, self.leaves)
                if member_grads is None:
                    continue
                state = self.state[param]
                if group["momentum"] and not state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                for k in self.members_of(param, member_grads):
                    buffer = state["momentum_buffer"][k] if group["momentum"] else None
                    lists = batches.setdefault(group["lr"] * self.scale(k), ([], [], []))
                    for into, tensor in zip(
                        lists, (param[k], member_grads[k], buffer), strict=True
                    ):
                        into.append(tensor)
            for lr, (params, grads, momentum_buffers) in batches.items():
                sgd(
                    params,
                    grads,
                    momentum_buffers,
                    weight_decay=0.0,
                    momentum=group["momentum"],
                    lr=lr,
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    foreach=False,
                )


def make_optimizer(
    params: Any,
    lr: float,
    eps: float,
    device: torch.device,
    capturable: bool,
    kind: str = "adam",
    momentum: float = 0.0,
    per_member: bool = False,
) -> torch.optim.Optimizer:
    """Adam (fused: one kernel for all parameters) or SGD over the stacked parameters.

    Where a pack runs as one batched model (CUDA) the whole stacked tensors go to the kernel, and
    `capturable` keeps Adam's step count and learning rate on the device so a CUDA graph can
    replay the update. Where it runs member by member (CPU), `MemberAdam` / `MemberSGD` keep a
    member's update bit-identical to a lone run's; `per_member` asks for them on CUDA too, where
    members need learning rates and optimizer restarts of their own (the plateau decay) or steps
    update some members only (aggressive training).
    """
    apart = per_member or not packing.batched(device)
    if kind == "sgd":
        if apart:
            return MemberSGD(params, lr=lr, momentum=momentum)
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if apart:
        return MemberAdam(params, lr=lr, eps=eps, fused=True)
    if capturable:
        lr_value: float | torch.Tensor = torch.tensor(lr, device=device)
        return torch.optim.Adam(params, lr=lr_value, eps=eps, fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # in place: a captured graph reads this very tensor
        else:
            group["lr"] = lr


class PackStep:
    """The training step of a pack over static buffers: a batch (K, b, P), noise (K, b, D), β (K,),
    and for models that declare a `noise_width` W (text dropout) uniform numbers (K, b, P, W).

    Fill `batch(b)`, `noise(b)`, `masks(b)` and `beta`, call `run(b, lengths)`; per-member sums
    over the epoch of recon + β·free-bits KL, recon, the true KL and the binding share (each summed
    over examples) accumulate in `sums` (4, K), float64. A partial batch (b < B) uses the front of
    the same storage, contiguous, so batches are gathered in place whatever their size. Token
    sequences (P = T) are read up to each member's `lengths[k]` tokens (its batch's longest
    sentence): past that a batch holds only padding, which no loss sees.
    """

    def __init__(
        self,
        model: Any,
        optimizer: torch.optim.Optimizer,
        free_bits: FreeBits,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        graph: bool = False,
        dtype: torch.dtype = torch.float32,
        grad_clip: float = 0.0,
    ) -> None:
        k, pixels, latent = model.members, model.input_dim, model.latent_dim
        self.model, self.optimizer, self.free_bits = model, optimizer, free_bits
        self.batch_size, self.device, self.precision = batch_size, device, precision
        self.members, self.pixels, self.latent = k, pixels, latent
        self.width, self.grad_clip = getattr(model, "noise_width", 0), grad_clip
        self._x = torch.zeros(k * batch_size * pixels, dtype=dtype, device=device)
        self._noise = torch.zeros(k * batch_size * latent, device=device)
        self._masks = torch.zeros(k * batch_size * pixels * self.width, device=device)
        self.beta = torch.zeros(k, device=device)
        self.sums = torch.zeros(len(TERMS), k, dtype=torch.float64, device=device)
        self.want_graph = graph and device.type == "cuda"
        self.leaves: dict[str, list[torch.nn.Parameter]] = {}
        if not packing.batched(device):
            self.leaves = packing.member_leaves(model)
            if isinstance(optimizer, MemberOptimizer):
                named = dict(model.named_parameters())
                optimizer.leaves = {named[n]: ls for n, ls in self.leaves.items()}
        #: One CUDA graph per step shape (a full batch, and for text each batch length), sharing
        #: one memory pool.
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._pool: Any = None

    def batch(self, rows: int) -> torch.Tensor:
        """The batch buffer for a step of `rows` examples per member: (K, rows, P), contiguous."""
        return self._x[: self.members * rows * self.pixels].view(self.members, rows, self.pixels)

    def noise(self, rows: int) -> torch.Tensor:
        """The reparameterisation-noise buffer: (K, rows, D), contiguous."""
        return self._noise[: self.members * rows * self.latent].view(self.members, rows, -1)

    def masks(self, rows: int) -> torch.Tensor | None:
        """The dropout buffer of uniform numbers: (K, rows, P, W), or None (no dropout)."""
        if not self.width:
            return None
        size = self.members * rows * self.pixels * self.width
        return self._masks[:size].view(self.members, rows, self.pixels, self.width)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _losses(
        self,
        model: Any,
        x: torch.Tensor,
        noise: torch.Tensor,
        masks: torch.Tensor | None,
        member: int | None,
    ) -> tuple[torch.Tensor, ...]:
        """Loss, recon, KL and binding share of a pack (member None) or of one member view."""
        with self._autocast():
            mu, logvar = model.encode(x)
            # Reparameterisation (Kingma & Welling 2014): z = μ + σ·ε.
            z = mu + noise * (0.5 * logvar).exp()
            params = model.decode(z, x, masks)
        mu, logvar, params = mu.float(), logvar.float(), params.float()
        recon = model.nll(params, x).mean(-1)  # (k,)
        kl = gaussian_kl_per_dim(mu, logvar)  # (k, b, D)
        fb, share = self.free_bits(kl, member)
        beta = self.beta if member is None else self.beta[member : member + 1]
        return recon + beta * fb, recon, kl, share

    def _step(
        self,
        rows: int,
        lengths: tuple[int, ...] | None = None,
        update: Update | None = None,
        accumulate: bool = True,
    ) -> torch.Tensor:
        """One update; returns the training loss (per example) of the members it trains. With an
        `update`, only its members are computed (member by member) or trained (batched)."""
        x, noise, masks = self.batch(rows), self.noise(rows), self.masks(rows)
        if packing.batched(self.device):
            if lengths is not None:  # the pack's longest: shorter sentences end in padding
                x, masks = _first_tokens(x, masks, max(lengths))
            loss, recon, kl, share = self._losses(self.model, x, noise, masks, None)
            kl_sum = kl.detach().sum((-2, -1))
            if update is not None:
                chosen = torch.tensor(update.members, device=self.device)
                loss, recon, kl_sum, share = (t[chosen] for t in (loss, recon, kl_sum, share))
        else:  # member by member: bit-identical to a pack of one (see models.packing)
            parts = []
            views = packing.member_views(self.model, self.leaves)
            for k in range(self.members) if update is None else update.members:
                xk, mk = x[k : k + 1], None if masks is None else masks[k : k + 1]
                if lengths is not None:
                    xk, mk = _first_tokens(xk, mk, lengths[k])
                parts.append(self._losses(views[k], xk, noise[k : k + 1], mk, k))
            loss, recon, share = (torch.cat([p[i] for p in parts]) for i in (0, 1, 3))
            kl_sum = torch.cat([p[2].detach().sum((-2, -1)) for p in parts])
        self.optimizer.zero_grad(set_to_none=True)
        for leaf_list in self.leaves.values():
            for leaf in leaf_list:
                leaf.grad = None
        loss.sum().backward()  # members are independent, so one backward serves them all
        if self.grad_clip:
            self._clip()
        if update is not None:
            self.optimizer.update = update  # type: ignore[attr-defined]
        try:
            self.optimizer.step()
        finally:
            if update is not None:
                self.optimizer.update = None  # type: ignore[attr-defined]
        losses = loss.detach()
        if accumulate:  # the epoch's sums last: a captured step ends with them
            terms = torch.stack([losses * rows, recon.detach() * rows, kl_sum, share * rows])
            self.sums += terms.double()
        return losses

    def _clip(self) -> None:
        """Scale each member's gradient to L2 norm ≤ `grad_clip`, its own norm, never the pack's
        (Pascanu et al. 2013; torch's clip_grad_norm_ per member)."""
        if self.leaves:
            for k in range(self.members):
                own = [ls[k] for ls in self.leaves.values() if ls[k].grad is not None]
                torch.nn.utils.clip_grad_norm_(own, self.grad_clip)
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
        scale = (self.grad_clip / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))

    def run(
        self, rows: int, lengths: tuple[int, ...] | None = None, update: Update | None = None
    ) -> None:
        """One step on the first `rows` examples of the buffers (text: each member's first
        `lengths[k]` tokens); an `update` says which members and parameters it trains (the
        step's sums must cover every member: use `inner` for steps that train some)."""
        if rows != self.batch_size or not self.want_graph or update is not None:
            self._step(rows, lengths, update)
            return
        key = max(lengths) if lengths else 0
        if key not in self.graphs:
            try:
                self._capture(key, lengths)
            except RuntimeError as exc:  # an op that cannot be captured: stay eager, correctly
                warnings.warn(f"CUDA graph capture failed, training eagerly: {exc}", stacklevel=2)
                self.want_graph = False
                self.graphs.clear()
                self._step(rows, lengths)
                return
        self.graphs[key].replay()

    def inner(self, rows: int, lengths: tuple[int, ...] | None, update: Update) -> torch.Tensor:
        """A step outside the epoch's sums (aggressive training's encoder steps): the loss per
        example of `update.members`, in that order."""
        return self._step(rows, lengths, update, accumulate=False)

    def _capture(self, key: int, lengths: tuple[int, ...] | None) -> None:
        """Capture the full-batch step in a CUDA graph (PyTorch's whole-network capture recipe).

        The warm-up steps run on a side stream and are then undone — parameters, Adam state and the
        sums restored — so a captured run trains exactly the steps an eager one does.
        """
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.warm_up(lengths)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(self.batch_size, lengths)
        self.graphs[key] = graph

    def warm_up(self, lengths: tuple[int, ...] | None = None) -> None:
        """Run `WARMUP_STEPS` full-batch steps on the current buffers, then undo them."""
        saved = self._snapshot()
        for _ in range(WARMUP_STEPS):
            self._step(self.batch_size, lengths)
        self._restore(saved)

    def _snapshot(self) -> dict[str, Any]:
        params = [p.detach().clone() for p in self.model.parameters()]
        state = {
            id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for p, s in self.optimizer.state.items()
        }
        return {"params": params, "state": state, "sums": self.sums.clone()}

    @torch.no_grad()
    def _restore(self, saved: dict[str, Any]) -> None:
        for param, value in zip(self.model.parameters(), saved["params"], strict=True):
            param.copy_(value)
        for param, state in self.optimizer.state.items():
            before = saved["state"].get(id(param))
            for key, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue
                if before is None:
                    value.zero_()  # state created by the warm-up: a fresh Adam starts at zero
                else:
                    value.copy_(before[key])
        self.sums.copy_(saved["sums"])


def _first_tokens(
    x: torch.Tensor, masks: torch.Tensor | None, tokens: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A batch of token sequences (k, b, T) and its dropout numbers cut to their first `tokens`."""
    return x[..., :tokens], None if masks is None else masks[..., :tokens, :]
