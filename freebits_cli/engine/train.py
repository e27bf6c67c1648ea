"""Train a pack of K compatible runs as one batched model, with exact resume from checkpoints.

Each member owns its RNG streams (init, data order, noise, binarisation, evaluation), seeded from its
own seed, so its numbers do not depend on which pack it trained in. After every epoch each member's
slice of the weights, Adam state and RNG states is saved and its rows are appended to its CSVs, in
an order (`_commit_epoch`, read back by `resume`) that lets a pack killed at any moment resume
together and end with the numbers an uninterrupted one would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from freebits_cli import schema
from freebits_cli.data import Dataset
from freebits_cli.engine import (
    aggressive,
    batches,
    interrupt,
    pack_state,
    plateau,
    probe,
    samples,
    scores,
    selection,
    warm_start,
)
from freebits_cli.engine.metrics import evaluate, mutual_information
from freebits_cli.engine.objective import beta_at, binding_share, free_bits_kl
from freebits_cli.engine.pack_state import STREAMS, Member, generator, stream_seed
from freebits_cli.engine.step import (
    TERMS,
    MemberOptimizer,
    PackStep,
    Update,
    make_optimizer,
    set_learning_rate,
)
from freebits_cli.models import build_model
from freebits_cli.results import records, storage
from freebits_cli.results.information import verdict_of
from freebits_cli.spec import RunConfig

__all__ = ["Member", "Outcome", "PackTrainer", "learning_rate"]

#: Random numbers drawn per member at once in training (bounds the memory of a block of steps).
BLOCK_ELEMENTS = 2**20


@dataclass(frozen=True)
class Outcome:
    run_id: str
    state: str  # "done" or "failed"
    reason: str = ""
    summary: dict[str, Any] | None = None


EpochCallback = Callable[[Sequence[str], int, int], None]
#: (run ids, 0-based epoch, steps done in it, steps per epoch): called at an epoch's first and
#: last step and at most every STEP_REPORT_S of wall time between them; it never waits on the
#: device (the step count is known on the host).
StepCallback = Callable[[Sequence[str], int, int, int], None]
STEP_REPORT_S = 2.0


def learning_rate(run: RunConfig, epoch: int) -> float:
    """Learning rate for 0-based `epoch`: constant, cosine to 0, or Burda et al. 2015's staircase
    (3^i epochs at lr·10^(-i/7), i = 0, 1, …)."""
    base, schedule, epochs = run.train.lr, run.train.lr_schedule, run.train.epochs
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "burda":
        stage, start = 0, 0
        while start + 3**stage <= epoch:
            start += 3**stage
            stage += 1
        return base * 10 ** (-stage / 7)
    return base


class PackTrainer:
    """Trains members that share data, architecture and optimisation settings, side by side."""

    def __init__(self, members: list[Member], data: Dataset, device: torch.device) -> None:
        self.members = members
        self.device = device
        first = members[0].run
        self.config = first
        self.data = data
        self.x_train = torch.from_numpy(data.x_train).to(device)
        self.x_test = torch.from_numpy(data.x_test).to(device)
        self.x_valid = None
        self.on_plateau = first.train.lr_decay == "plateau"
        watch = first.eval.select == "best_valid" or self.on_plateau
        if watch and data.x_valid is not None:
            self.x_valid = torch.from_numpy(data.x_valid).to(device)
        #: Held-out data of aggressive training's stop rule (He et al.: validation) — the test
        #: set where the data has no validation set.
        self.x_held = self.x_test
        if data.x_valid is not None:
            self.x_held = torch.from_numpy(data.x_valid).to(device)
        # Text: each training sentence's tokens, on the host, for batches of similar lengths.
        self.lengths = (data.x_train != 0).sum(1) if data.is_text else None
        self.dynamic = data.binarize == "dynamic"
        self.dequantize = data.dequantize == "uniform"
        self.n_train = self.x_train.shape[0]
        self.steps_per_epoch = math.ceil(self.n_train / first.train.batch_size)
        self.total_steps = self.steps_per_epoch * first.train.epochs
        self.image_shape = data.image_shape
        self.start_epoch = 0
        self._build([None] * len(members))

    # -- construction, checkpoints and member selection ---------------------------------------

    def _build(self, states: list[dict[str, Any] | None]) -> None:
        """Fresh model + Adam for the current members, loading each member's saved state if any."""
        m = self.config.model
        k = len(self.members)
        self.model = build_model(m, self.image_shape, k, self.data.vocab_size)
        self.model.to(self.device)
        # A member whose decoder is reset after a warm start draws it from a stream of its own,
        # not again the initialisation its pretraining started from.
        self.model.reset(
            [
                generator(self.device, stream_seed(x.run.train.seed, self._init_stream(x, s)))
                for x, s in zip(self.members, states, strict=True)
            ]
        )
        if m.output_bias == "data_mean" and m.likelihood == "bernoulli":
            # Burda et al. 2015: start the decoder at the logit of each pixel's mean intensity.
            mean = self.x_train.mean(0).clamp(1e-3, 1 - 1e-3)
            with torch.no_grad():
                self.model.to_logits.bias.copy_(
                    torch.logit(mean).expand_as(self.model.to_logits.bias)
                )
        self._warm_start(states)
        train = self.config.train
        # SGD, members with learning rates of their own (plateau) and aggressive training (steps
        # that update some members only) train eagerly, member by member, on CUDA: a learning
        # rate or a member set would be baked into a captured graph.
        apart = self.on_plateau or any(x.run.train.aggressive for x in self.members)
        graph = train.cuda_graph and self.device.type == "cuda" and train.optimizer == "adam"
        graph = graph and not apart
        self.optimizer = make_optimizer(
            self.model.parameters(),
            train.lr,
            train.adam_eps,
            self.device,
            capturable=graph,
            kind=train.optimizer,
            momentum=train.momentum,
            per_member=apart,
        )
        for member, state in zip(self.members, states, strict=True):
            if state is None:
                member.aggressive, member.previous_mi = member.run.train.aggressive, 0.0
                member.generators = {
                    s: generator(self.device, stream_seed(member.run.train.seed, s))
                    for s in STREAMS
                }
        if any(s is not None for s in states):
            self._load(states)
        if isinstance(self.optimizer, MemberOptimizer):
            self.optimizer.lr_scales = [m.plateau.scale for m in self.members]
        self.lam = torch.tensor([x.run.free_bits.lam for x in self.members], device=self.device)
        self.mode_groups: dict[tuple[str, int], torch.Tensor] = {}
        for i, member in enumerate(self.members):
            key = (member.run.free_bits.mode, member.run.free_bits.groups)
            self.mode_groups.setdefault(key, torch.empty(0, dtype=torch.long))
            self.mode_groups[key] = torch.cat([self.mode_groups[key], torch.tensor([i])])
        self.mode_groups = {key: idx.to(self.device) for key, idx in self.mode_groups.items()}
        self.step = PackStep(
            self.model,
            self.optimizer,
            self._free_bits,
            train.batch_size,
            self.device,
            precision=train.precision,
            graph=graph,
            dtype=self.x_train.dtype,
            grad_clip=train.grad_clip,
        )
        if apart:  # the encoder's parameters, which the aggressive inner steps move alone
            x = self.x_train[:2].unsqueeze(0).expand(k, -1, -1)
            names = warm_start.encoder_names(self.model, x)
            self.optimizer.encoder = frozenset(  # type: ignore[attr-defined]
                id(p) for n, p in self.model.named_parameters() if n in names
            )

    @staticmethod
    def _init_stream(member: Member, state: dict[str, Any] | None) -> str:
        return "reset" if state is None and member.encoder_only else "init"

    def _warm_start(self, states: list[dict[str, Any] | None]) -> None:
        """Members starting fresh from given parameters (`init.from`, a pretraining) take them."""
        starting = [
            (i, m)
            for i, (m, s) in enumerate(zip(self.members, states, strict=True))
            if s is None and m.init_from is not None
        ]
        if not starting:
            return
        encoder = None
        if any(m.encoder_only for _, m in starting):
            x = self.x_train[:2].unsqueeze(0).expand(len(self.members), -1, -1)
            encoder = warm_start.encoder_names(self.model, x)
        for i, member in starting:
            assert member.init_from is not None
            params = warm_start.read_params(member.init_from)
            warm_start.check_shapes(self.model, params, str(member.init_from))
            warm_start.warm_start(self.model, i, params, encoder if member.encoder_only else None)

    def member_state(self, index: int) -> dict[str, Any]:
        """Member `index`'s slice of weights and Adam moments, its RNG states and history."""
        return self.member_states([index])[0]

    def member_states(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """`member_state` of several members (see `pack_state.save_states`)."""
        members = [self.members[i] for i in indices]
        return pack_state.save_states(
            self.model, self.optimizer, members, indices, self.device, self.start_epoch
        )

    def _load(self, states: list[dict[str, Any] | None]) -> None:
        adam = self.config.train.optimizer == "adam"
        self.start_epoch = pack_state.load_states(
            self.model, self.optimizer, self.members, states, self.device, adam
        )

    def resume(self, states: list[dict[str, Any]]) -> None:
        """Continue from checkpoints (all at the same epoch)."""
        self._build(list(states))

    def drop(self, indices: set[int]) -> None:
        """Remove members (diverged runs) and rebuild the pack around the others."""
        keep = [i for i in range(len(self.members)) if i not in indices]
        states = [self.member_state(i) for i in keep]
        self.members = [self.members[i] for i in keep]
        if self.members:
            self._build(states)

    # -- the training loop ----------------------------------------------------------------------

    def _free_bits(
        self, kl: torch.Tensor, member: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-bits KL and binding share per member, each member with its own λ and mode: (k,).

        `kl` is the pack's (K, B, D), or member `member`'s alone (1, B, D)."""
        if member is not None:
            spec, lam = self.members[member].run.free_bits, self.lam[member : member + 1]
            return (
                free_bits_kl(kl, lam, spec.mode, spec.groups),
                binding_share(kl.detach(), lam, spec.mode, spec.groups),
            )
        if len(self.mode_groups) == 1:  # the usual case: one mode for the whole pack
            ((mode, groups),) = self.mode_groups
            return (
                free_bits_kl(kl, self.lam, mode, groups),
                binding_share(kl.detach(), self.lam, mode, groups),
            )
        fb = torch.zeros(len(self.members), device=self.device)
        share = torch.zeros(len(self.members), device=self.device)
        for (mode, groups), idx in self.mode_groups.items():
            fb = fb.index_put((idx,), free_bits_kl(kl[idx], self.lam[idx], mode, groups))
            share[idx] = binding_share(kl[idx].detach(), self.lam[idx], mode, groups)
        return fb, share

    def _draw(self, stream: str, rows: int, width: int, uniform: bool = False) -> torch.Tensor:
        """(K, rows, width) random numbers, slice k from member k's own `stream`."""
        sample = torch.rand if uniform else torch.randn
        return torch.stack(
            [
                sample(rows, width, generator=m.generators[stream], device=self.device)
                for m in self.members
            ]
        )

    def train_epoch(
        self, epoch: int, on_step: StepCallback | None = None
    ) -> dict[str, torch.Tensor]:
        """One pass over the training set; per-member averages per example.

        Random numbers are drawn per member for blocks of steps rather than per step: a handful
        of kernel launches per block instead of 2K per step, in the same order for any pack.
        Batches are gathered straight into the step's buffers; nothing waits on the device.
        """
        lr = learning_rate(self.config, epoch)
        set_learning_rate(self.optimizer, lr)
        size, steps, step_fn = self.config.train.batch_size, self.steps_per_epoch, self.step
        data_streams = [m.generators["data"] for m in self.members]
        order = batches.permutations(self.n_train, data_streams, self.device)  # (K, N)
        step_lengths: list[tuple[int, ...]] | list[None] = [None] * steps
        if self.lengths is not None:  # text: batches of similar lengths, each read to its longest
            round_to = batches.GRAPH_LENGTH_STEP if step_fn.want_graph else 1
            order, step_lengths = batches.by_length(
                order, self.lengths, size, data_streams, round_to
            )
        first = epoch * steps
        betas = torch.tensor(
            [
                [beta_at(first + s, m.run.anneal, steps, self.total_steps) for m in self.members]
                for s in range(steps)
            ],
            device=self.device,
        )  # (steps, K), one host-to-device copy per epoch
        step_fn.sums.zero_()
        inner_steps = [0] * len(self.members)
        pixels, latent = self.x_train.shape[1], self.config.model.latent_dim
        block = max(1, BLOCK_ELEMENTS // (size * pixels))
        ids = [m.run.run_id for m in self.members]
        if on_step is not None:
            on_step(ids, epoch, 0, steps)
        report_at = time.monotonic() + STEP_REPORT_S
        for block_start in range(0, steps, block):
            rows = min(self.n_train, (block_start + block) * size) - block_start * size
            noise = self._draw("noise", rows, latent)  # (K, rows, D)
            coins = self._draw("binarize", rows, pixels, uniform=True) if self.dynamic else None
            # -- models: uniform dequantisation noise, from each member's own stream ----------
            jitter = (
                self._draw("dequantize", rows, pixels, uniform=True) if self.dequantize else None
            )
            for step in range(block_start, min(steps, block_start + block)):
                interrupt.check()
                at = slice((step - block_start) * size, (step - block_start + 1) * size)
                index = order[:, step * size : (step + 1) * size]  # (K, b)
                b = index.shape[1]
                update = None
                if active := [k for k, m in enumerate(self.members) if m.aggressive]:
                    # He et al. 2019: the encoder first, on its own stream's batches (the step's
                    # buffers are filled for the full update below), then the decoder alone.
                    step_fn.beta.copy_(betas[step])
                    taken = aggressive.inner_loop(self, index, active)
                    inner_steps = [a + t for a, t in zip(inner_steps, taken, strict=True)]
                    update = Update(tuple(range(len(self.members))), decoder_only=frozenset(active))
                x = step_fn.batch(b)
                torch.index_select(self.x_train, 0, index.reshape(-1), out=x.view(-1, pixels))
                if coins is not None:
                    # Dynamic binarisation: a fresh Bernoulli sample of every batch (Burda et al.).
                    x.copy_(coins[:, at] < x)
                if jitter is not None:
                    # 8-bit k (stored as k/255) -> (k + u)/256 (Theis et al. 2016), fresh per batch.
                    x.copy_((torch.round(x * 255) + jitter[:, at]) / 256)
                step_fn.noise(b).copy_(noise[:, at])
                masks = step_fn.masks(b)
                if masks is not None:  # dropout: uniform numbers from each member's own stream
                    self._draw_masks(masks, step_lengths[step] or (pixels,) * len(self.members))
                step_fn.beta.copy_(betas[step])
                step_fn.run(b, step_lengths[step], update)
                if on_step is not None and (step + 1 == steps or time.monotonic() >= report_at):
                    on_step(ids, epoch, step + 1, steps)
                    report_at = time.monotonic() + STEP_REPORT_S
        out = dict(zip(TERMS, step_fn.sums / self.n_train, strict=True))
        out["beta"] = betas[-1]
        out["lr"] = torch.tensor([lr * m.plateau.scale for m in self.members], dtype=torch.float64)
        out["aggressive_steps"] = inner_steps  # type: ignore[assignment]
        return out

    def _draw_masks(self, masks: torch.Tensor, lengths: tuple[int, ...]) -> None:
        """Member k's dropout numbers for its batch's first `lengths[k]` tokens: (b, T_k, W)."""
        rows, width = masks.shape[1], masks.shape[3]
        for k, (member, tokens) in enumerate(zip(self.members, lengths, strict=True)):
            stream = member.generators["dropout"]
            fresh = torch.rand(rows, tokens, width, generator=stream, device=self.device)
            masks[k, :, :tokens].copy_(fresh)

    def _best_generators(self, stream: str, bests: Sequence[Any]) -> list[torch.Generator]:
        return [
            generator(self.device, stream_seed(m.run.train.seed, stream, best["epoch"]))
            for m, best in zip(self.members, bests, strict=True)
        ]

    def _eval_generators(self, stream: str, epoch: int) -> list[torch.Generator]:
        return [
            generator(self.device, stream_seed(m.run.train.seed, stream, epoch))
            for m in self.members
        ]

    def run(
        self, on_epoch: EpochCallback | None = None, on_step: StepCallback | None = None
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        epochs = self.config.train.epochs
        outcomes += self._retire_stopped()  # resumed after a stop that was not yet written up
        for epoch in range(self.start_epoch, epochs):
            if not self.members:
                break
            started = time.perf_counter()
            self.model.train()
            train = self.train_epoch(epoch, on_step)
            self.model.eval()
            rows = self._evaluate_epoch(epoch + 1, train)
            self._end_of_run_scores(epoch + 1, rows)
            elapsed = time.perf_counter() - started
            diverged = {}
            for i, (member, row) in enumerate(zip(self.members, rows, strict=True)):
                member.seconds += elapsed / len(self.members)  # its share of the pack's time
                member.pack_seconds += elapsed
                row["seconds"] = member.seconds
                bad = [k for k in ("train_loss", "test_elbo") if not math.isfinite(row[k])]
                if bad:
                    diverged[i] = f"diverged at epoch {epoch + 1}: {bad[0]} is {row[bad[0]]}"
            self.start_epoch = epoch + 1
            self._decay_on_plateau(epoch + 1, rows, diverged)
            self._commit_epoch(rows, diverged)
            for i, reason in diverged.items():
                member = self.members[i]
                records.write_failure(member.folder, member.run, member.setting, reason, epoch + 1)
                outcomes.append(Outcome(member.run.run_id, "failed", reason))
            if diverged:
                self.drop(set(diverged))
            if epoch + 1 < epochs:
                outcomes += self._retire_stopped()
            if on_epoch is not None:
                on_epoch([m.run.run_id for m in self.members], epoch + 1, epochs)
        if self.members:
            outcomes += self._finish()
        return outcomes

    def _end_of_run_scores(self, epoch: int, rows: list[dict[str, Any]]) -> None:
        """The members whose plateau decays run out at 1-based `epoch` (before train.epochs) end
        their training here: their rows get the end-of-run scores (IWAE bound, MI) that a last
        epoch has, from a pack of just them, so no other member's row depends on it."""
        train = self.config.train
        if not self.on_plateau or epoch >= train.epochs:
            return
        ending = [
            i
            for i, (member, row) in enumerate(zip(self.members, rows, strict=True))
            if member.best is not None and plateau.ends_now(member.plateau, row, epoch, train)
        ]
        if not ending:
            return
        model = build_model(self.config.model, self.image_shape, len(ending), self.data.vocab_size)
        model.to(self.device).eval()
        with torch.no_grad():
            params = zip(model.parameters(), self.model.parameters(), strict=True)
            for mine, theirs in params:
                mine.copy_(theirs.detach()[ending])
        seeds = [self.members[i].run.train.seed for i in ending]
        values, _ = scores.test_scores(
            model,
            self.x_test,
            self.config,
            lambda s: [generator(self.device, stream_seed(seed, s, epoch)) for seed in seeds],
            train.epochs,
            self.data.is_text,
        )
        for j, i in enumerate(ending):
            rows[i].update({key: v[j] for key, v in values.items() if v is not None})

    def _decay_on_plateau(
        self, epoch: int, rows: list[dict[str, Any]], diverged: dict[int, str]
    ) -> None:
        """train.lr_decay: plateau, after 1-based `epoch`: each member's rule on its validation
        ELBO; a member that decays restarts from its best parameters with a fresh optimizer at
        its lower learning rate (see `plateau`). Before the commit, so checkpoints hold it."""
        if not self.on_plateau:
            return
        train = self.config.train
        for i, (member, row) in enumerate(zip(self.members, rows, strict=True)):
            if i in diverged or member.best is None:
                continue
            if plateau.after_epoch(member.plateau, row["valid_elbo"], epoch, train):
                plateau.reload_best(
                    self.model, self.optimizer, i, member.best, member.plateau.scale
                )

    def _retire_stopped(self) -> list[Outcome]:
        """Finish the members whose plateau decays are spent (their training ends early), and
        rebuild the pack around the others; each is finished as it would be alone."""
        train = self.config.train
        done = [i for i, m in enumerate(self.members) if plateau.stopped(m.plateau, train)]
        if not done:
            return []
        everyone, states = self.members, self.member_states(range(len(self.members)))
        self.members = [everyone[i] for i in done]
        self._build([states[i] for i in done])
        outcomes = self._finish()
        self.members = [m for i, m in enumerate(everyone) if i not in done]
        if self.members:
            self._build([states[i] for i, _ in enumerate(everyone) if i not in done])
        return outcomes

    def _commit_epoch(self, rows: list[dict[str, Any]], diverged: dict[int, str]) -> None:
        """Write an epoch so that a kill between any two writes resumes the whole pack together.

        1. every member's checkpoint.next.pt; 2. every member's CSV rows; 3. each promotion to
        checkpoint.pt. Until step 3 the previous checkpoint stays, so each member always holds
        this epoch or the last one, and the rows of an epoch can be rebuilt from its checkpoint
        (see `resume`). Diverged members get no checkpoint; their failure is written after.
        """
        keep = [i for i in range(len(self.members)) if i not in diverged]
        for i in keep:
            self.members[i].last_row = rows[i]
        for i, state in zip(keep, self.member_states(keep), strict=True):
            storage.save_checkpoint(self.members[i].folder / schema.CHECKPOINT_NEXT, state)
        for i in keep:
            member = self.members[i]
            records.append_epoch(member.folder, rows[i], member.kl_history[-1], member.kl_spread)
        for i in keep:
            storage.promote_checkpoint(self.members[i].folder)

    def _evaluate_epoch(self, epoch: int, train: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """Held-out metrics of every member after `epoch` (1-based), as metrics.csv rows."""
        values, ev = scores.test_scores(
            self.model,
            self.x_test,
            self.config,
            lambda s: self._eval_generators(s, epoch),
            epoch,
            self.data.is_text,
            self._probe(),
        )
        values.update(
            {
                "beta": train["beta"].tolist(),
                "train_loss": train["loss"].tolist(),
                "train_recon": train["recon"].tolist(),
                "train_kl": train["kl"].tolist(),
                "binding_share": train["binding"].tolist(),
                "lr": train["lr"].tolist(),
                "valid_elbo": self._validate(epoch),
                **self._aggressive_columns(epoch, train),
            }
        )
        kl_per_dim, kl_spread = ev.kl_per_dim.tolist(), ev.kl_spread.tolist()
        rows = []
        for i, member in enumerate(self.members):
            member.kl_history.append(kl_per_dim[i])
            member.kl_spread = kl_spread[i]
            row = {
                "run_id": member.run.run_id,
                **records.labels(member.run),
                "epoch": epoch,
                "step": epoch * self.steps_per_epoch,
            }
            row.update({key: None if v is None else v[i] for key, v in values.items()})
            rows.append(row)
        return rows

    def _probe(self) -> scores.Probe | None:
        """The linear probe of a model's posterior means, where the data has labels."""
        y_train, y_test = self.data.y_train, self.data.y_test
        if y_train is None or y_test is None:
            return None
        return lambda model, generators: probe.probe_accuracy(
            model, self.x_train, y_train, self.x_test, y_test, generators, self.dynamic
        )

    def _aggressive_columns(self, epoch: int, train: dict[str, Any]) -> dict[str, list[Any] | None]:
        """Aggressive training's columns after `epoch`, and its stop rule applied (He et al.)."""
        on = [m.run.train.aggressive for m in self.members]
        if not any(on):
            return {"aggressive_steps": None, "aggressive_mi": None}
        steps = [t if o else None for t, o in zip(train["aggressive_steps"], on, strict=True)]
        judged: list[float | None] = [None] * len(self.members)
        if any(m.aggressive for m in self.members):
            generators = self._eval_generators("aggressive_mi", epoch)
            mi = mutual_information(self.model, self.x_held, generators).tolist()
            judged = aggressive.stop_rule(self.members, mi)
        return {"aggressive_steps": steps, "aggressive_mi": judged}

    def _validate(self, epoch: int) -> list[float] | None:
        """Validation ELBOs (eval.select: best_valid), each member's best state kept."""
        if self.x_valid is None:
            return None
        ev = evaluate(self.model, self.x_valid, self._eval_generators("valid", epoch))
        elbos = ev.elbo.tolist()
        for i, member in enumerate(self.members):
            if selection.improved(member.best, elbos[i]):
                member.best = selection.snapshot(self.model, i, epoch, elbos[i])
        return elbos

    def _best_scores(self) -> list[dict[str, Any] | None]:
        """Each member's test numbers at its best validation epoch (eval.select: best_valid)."""
        missing = self.x_valid is None or any(m.best is None for m in self.members)
        if missing or self.config.eval.select != "best_valid":
            return [None] * len(self.members)
        bests = [m.best for m in self.members]
        model = build_model(self.config.model, self.image_shape, len(bests), self.data.vocab_size)
        model.to(self.device).eval()
        selection.load_best(model, bests)  # type: ignore[arg-type]
        # Each member's streams of its best epoch: its numbers there are that epoch's row again.
        values, _ = scores.test_scores(
            model,
            self.x_test,
            self.config,
            lambda s: self._best_generators(s, bests),
            self.config.train.epochs,
            self.data.is_text,
            self._probe(),
        )
        return [
            {
                "epoch": best["epoch"],
                "valid_elbo": best["valid_elbo"],
                **{key: None if v is None else v[i] for key, v in values.items()},
            }
            for i, best in enumerate(bests)  # type: ignore[arg-type]
        ]

    def _finish(self) -> list[Outcome]:
        """Save samples, then write each member's summary.json last, and drop its checkpoints.

        A kill in here resumes at the final epoch and comes back here: samples already written
        are kept (remade in another pack, they could differ in the last bits on a GPU)."""
        folders = [m.folder for m in self.members]
        decoding = [
            generator(self.device, stream_seed(m.run.train.seed, "decode")) for m in self.members
        ]
        samples.save_samples(
            self.model,
            self.data,
            self.x_test,
            folders,
            self.config.eval.samples,
            decoding,
            self.config.eval.temperature,
        )
        outcomes = []
        for i, member in enumerate(self.members):
            warm_start.save_model(member.folder, self.model, i, member.best)
        for member, best in zip(self.members, self._best_scores(), strict=True):
            extra = {
                "seconds": member.seconds,
                schema.PACK_SECONDS: member.pack_seconds,
                "device": str(self.device),
                "setting": member.setting,
                "information": verdict_of(member.last_row),
            }
            if best is not None:
                extra["best_valid"] = best
            if self.on_plateau:
                extra["lr_decays"] = member.plateau.decays
            summary = records.write_summary(
                member.folder, member.run, member.last_row, member.kl_history, extra
            )
            outcomes.append(Outcome(member.run.run_id, "done", summary=summary))
        return outcomes
