"""Aggressive inference-network training (He et al. 2019): the inner loop and both stop rules
against a transcription of their code, encoder-only and decoder-only updates per member, per-member
Adam step counts, packed = alone bit for bit, and exact resume during the aggressive phase."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sweeps
import torch

from freebits_cli.engine import aggressive
from freebits_cli.engine.step import MemberAdam, Update
from freebits_cli.engine.train import Member, PackTrainer
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import executor
from freebits_cli.sweep.runs import dataset

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    ("model.hidden", [16]),
    ("model.latent_dim", 3),
    ("train.epochs", 3),
    ("train.device", "cpu"),
    ("train.batch_size", 256),
    ("train.aggressive", True),
    ("train.aggressive_steps", 16),
    ("eval.iwae_samples", 4),
    ("eval.samples", 1),
    ("dataset.train_size", 600),
    ("dataset.test_size", 200),
    ("grid.lambda", [0, 1]),
]
KEYS = ("test_elbo", "test_recon", "test_kl", "test_iwae_nll", "test_mi", "kl_per_dim")


def he_burn(losses: list[float], cap: int, rows: int = 4) -> int:
    """He et al. 2019's inner loop (vae-lagging-encoder `image.py`), transcribed for one run:
    the encoder steps it takes before a decoder update, given the loss of each step."""
    sub_iter, burn_pre_loss, burn_cur_loss, burn_num_examples, taken = 1, 1e4, 0.0, 0, 0
    stream = iter(losses)
    while sub_iter < cap + 1:  # theirs: `while aggressive_flag and sub_iter < 100`, cap 99
        burn_num_examples += rows
        burn_cur_loss += next(stream) * rows  # loss.sum() of the batch's per-example losses
        taken += 1
        if sub_iter % 15 == 0:
            burn_cur_loss = burn_cur_loss / burn_num_examples
            if burn_pre_loss - burn_cur_loss < 0:
                break
            burn_pre_loss = burn_cur_loss
            burn_cur_loss = burn_num_examples = 0
        sub_iter += 1
    return taken


def test_the_inner_loop_takes_the_steps_he_et_al_take(monkeypatch: pytest.MonkeyPatch) -> None:
    cap, rows = 99, 4
    scripts = {
        0: [10 - 0.1 * t for t in range(40)] + [20.0] * 60,  # worse from step 41: leaves at 45
        1: [10 - 0.01 * t for t in range(100)],  # always better: the cap
        3: [5.0] * 15 + [5.0 + 1e-9] * 85,  # the second window is worse by a hair: leaves at 30
    }
    calls = {k: 0 for k in scripts}
    seen: list[tuple[int, ...]] = []

    def inner(n: int, lengths: Any, update: Update) -> torch.Tensor:
        assert n == rows and update.encoder_only == frozenset(update.members)
        seen.append(update.members)
        out = []
        for k in update.members:
            out.append(scripts[k][calls[k]])
            calls[k] += 1
        return torch.tensor(out, dtype=torch.float64)

    trainer = SimpleNamespace(
        step=SimpleNamespace(inner=inner),
        members=[None] * 4,
        config=SimpleNamespace(train=SimpleNamespace(aggressive_steps=cap)),
        device=torch.device("cpu"),
    )
    fill = lambda t, members, index: (rows, None, torch.full((len(members),), float(rows)))  # noqa: E731
    monkeypatch.setattr(aggressive, "_fill", fill)
    taken = aggressive.inner_loop(trainer, torch.zeros(4, rows), [0, 1, 3])  # type: ignore[arg-type]
    expected = [he_burn(scripts[0], cap), he_burn(scripts[1], cap), 0, he_burn(scripts[3], cap)]
    assert taken == expected == [45, 99, 0, 30]
    assert seen[0] == (0, 1, 3) and seen[30] == (0, 1) and seen[45] == (1,)  # each leaves alone


def test_the_phase_ends_at_the_first_epoch_whose_mi_falls() -> None:
    """He et al.: `if cur_mi - pre_mi < 0: aggressive_flag = False`, pre_mi starting at 0."""
    members = [SimpleNamespace(aggressive=True, previous_mi=0.0) for _ in range(3)]
    members[2].aggressive = False
    history = []
    for mi in ([0.5, -0.1, 0.3], [0.7, 0.2, 0.3], [0.6, 0.4, 0.3], [0.9, 0.5, 0.3]):
        history.append(aggressive.stop_rule(members, mi))
    assert [h[0] for h in history] == [0.5, 0.7, 0.6, None]  # fell at the third epoch
    assert [h[1] for h in history] == [-0.1, None, None, None]  # below 0 at once
    assert [h[2] for h in history] == [None] * 4
    assert [m.aggressive for m in members] == [False, False, False]


def trainer_of(*extra: tuple[str, Any]) -> PackTrainer:
    spec = build_spec(None, [*SMALL, *extra])
    runs = spec.expand()
    members = [Member(run, Path("unused"), {}) for run in runs]
    return PackTrainer(members, dataset(runs[0].dataset), torch.device("cpu"))


def params_of(trainer: PackTrainer, k: int) -> dict[str, torch.Tensor]:
    return {n: p[k].detach().clone() for n, p in trainer.model.named_parameters()}


def test_inner_steps_move_only_the_encoder_of_members_in_the_loop() -> None:
    trainer = trainer_of()
    encoder_ids = trainer.optimizer.encoder  # type: ignore[attr-defined]
    names = {n for n, p in trainer.model.named_parameters() if id(p) in encoder_ids}
    assert names == {"encoder.0.weight", "encoder.0.bias", "to_stats.weight", "to_stats.bias"}
    before = [params_of(trainer, k) for k in range(2)]
    streams = [m.generators["data"].get_state() for m in trainer.members]
    index = torch.arange(256).expand(2, -1)
    trainer.step.beta.fill_(1.0)
    taken = aggressive.inner_loop(trainer, index, [0])
    assert taken[1] == 0 and 1 <= taken[0] <= 16
    after = [params_of(trainer, k) for k in range(2)]
    for name in before[0]:
        moved = not torch.equal(before[0][name], after[0][name])
        assert moved == (name in names), name  # member 0: encoder only
        assert torch.equal(before[1][name], after[1][name]), name  # member 1: untouched
    for member, state in zip(trainer.members, streams, strict=True):  # not the data stream
        assert torch.equal(member.generators["data"].get_state(), state)
    for name, param in trainer.model.named_parameters():  # Adam's step counts, per member
        count = (
            trainer.optimizer.state[param]["step"].tolist()
            if param in trainer.optimizer.state
            else [0, 0]
        )
        assert count == ([taken[0], 0] if name in names else [0, 0]), name  # fmt: skip
    # The full update in the phase: member 0's decoder alone, member 1 everything.
    x = trainer.step.batch(256)
    x.copy_(trainer.x_train[:256].expand(2, -1, -1))
    trainer.step.run(256, None, Update((0, 1), decoder_only=frozenset({0})))
    last = [params_of(trainer, k) for k in range(2)]
    for name in before[0]:
        assert torch.equal(after[0][name], last[0][name]) == (name in names), name
        assert not torch.equal(after[1][name], last[1][name]), name


def test_member_adam_counts_each_members_steps() -> None:
    """A member that skipped steps is updated as a lone Adam that took only its own."""
    torch.manual_seed(0)
    start = torch.randn(2, 7)
    grads = [torch.randn(2, 7) for _ in range(3)]
    stacked = torch.nn.Parameter(start.clone())
    opt = MemberAdam([stacked], lr=0.1, fused=True)
    lone = [torch.nn.Parameter(start[k].clone()) for k in range(2)]
    lone_opts = [torch.optim.Adam([p], lr=0.1, fused=True) for p in lone]
    for t, g in enumerate(grads):
        members = (0, 1) if t == 1 else (0,)  # member 1 steps once, at the second step
        stacked.grad = g.clone()
        opt.update = Update(members)
        opt.step()
        for k in members:
            lone[k].grad = g[k].clone()
            lone_opts[k].step()
    assert opt.state[stacked]["step"].tolist() == [3.0, 1.0]
    for k in range(2):
        assert torch.equal(stacked[k], lone[k]), k


def summaries(out: Path) -> dict[str, dict[str, Any]]:
    found = (out / "default" / "runs").glob("*/summary.json")
    return {p.parent.name: json.loads(p.read_text()) for p in found}


def metrics(out: Path, run_id: str) -> list[str]:
    text = (out / "default/runs" / run_id / "metrics.csv").read_text()
    return [line.rsplit(",", 1)[0] for line in text.splitlines()]  # all but seconds


class Interrupt(Exception):
    pass


def test_packed_alone_and_resumed_aggressive_runs_agree_bit_for_bit(tmp_path: Path) -> None:
    spec = build_spec(None, SMALL)
    sweeps.run(spec, tmp_path / "packed")
    sweeps.run(spec, tmp_path / "alone", pack_size=1)

    def stop(ids: Any, epoch: int, epochs: int) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweeps.run(spec, tmp_path / "resumed", on_epoch=stop)
    assert {r.start_epoch for r in executor.plan(spec, tmp_path / "resumed").runs} == {1}
    sweeps.run(spec, tmp_path / "resumed")
    packed = summaries(tmp_path / "packed")
    assert len(packed) == 2
    for out in ("alone", "resumed"):
        other = summaries(tmp_path / out)
        for run_id, expected in packed.items():
            for key in KEYS:
                assert other[run_id][key] == expected[key], (out, run_id, key)
            assert metrics(tmp_path / out, run_id) == metrics(tmp_path / "packed", run_id)
    import pandas as pd

    for run_id in packed:
        rows = pd.read_csv(tmp_path / "packed/default/runs" / run_id / "metrics.csv")
        steps = rows["aggressive_steps"].tolist()
        assert steps[0] >= 3  # three updates an epoch, each after one inner step or more
        assert all(s <= 3 * 16 for s in steps)
        # MI is judged while the phase lasts; once it ended no inner step is taken.
        judged = rows["aggressive_mi"].notna().tolist()
        assert judged[0] and judged == sorted(judged, reverse=True)
        assert all(s == 0 for s, j in zip(steps[1:], judged[:-1], strict=True) if not j)


def test_plain_runs_have_no_aggressive_numbers(tmp_path: Path) -> None:
    spec = build_spec(None, [*SMALL, ("train.aggressive", False), ("train.epochs", 1)])
    sweeps.run(spec, tmp_path)
    import pandas as pd

    for run_id in summaries(tmp_path):
        rows = pd.read_csv(tmp_path / "default/runs" / run_id / "metrics.csv")
        assert rows["aggressive_steps"].isna().all() and rows["aggressive_mi"].isna().all()


def test_the_batched_path_trains_members_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """How a pack runs on CUDA (one batched model), rehearsed on the CPU: the optimizer goes
    member by member, an inner step moves only the encoder of the members in the loop, and a
    sweep in that mode ends close to the member-by-member one."""
    from freebits_cli.models import packing

    monkeypatch.setattr(packing, "batched", lambda device: True)
    trainer = trainer_of()
    assert isinstance(trainer.optimizer, MemberAdam) and not trainer.step.leaves
    encoder_ids = trainer.optimizer.encoder
    before = [params_of(trainer, k) for k in range(2)]
    trainer.step.beta.fill_(1.0)
    taken = aggressive.inner_loop(trainer, torch.arange(256).expand(2, -1), [1])
    assert taken[0] == 0 and taken[1] >= 1
    for name, param in trainer.model.named_parameters():
        assert torch.equal(before[0][name], param[0]), name
        assert torch.equal(before[1][name], param[1]) != (id(param) in encoder_ids), name
