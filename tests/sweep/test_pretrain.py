"""Encoder pretraining (Li et al. 2019) and warm starts (`init.from`): the pretraining is a run of
its own, trained once for every run that shares it; a run starts from its encoder (and a fresh
decoder); two hand-run phases give the same numbers; a kill during pretraining resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sweeps
import torch

from freebits_cli import schema
from freebits_cli.engine import warm_start
from freebits_cli.engine.pack_state import generator, stream_seed
from freebits_cli.engine.train import Member, PackTrainer
from freebits_cli.errors import SpecError
from freebits_cli.models import build_model
from freebits_cli.spec import SweepSpec
from freebits_cli.spec.files import build_spec
from freebits_cli.sweep import executor, pretrain
from freebits_cli.sweep.runs import dataset

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    ("model.hidden", [16]),
    ("model.latent_dim", 3),
    ("train.epochs", 2),
    ("train.device", "cpu"),
    ("train.batch_size", 256),
    ("eval.iwae_samples", 4),
    ("eval.samples", 1),
    ("dataset.train_size", 600),
    ("dataset.test_size", 200),
]
KEYS = ("test_elbo", "test_recon", "test_kl", "test_iwae_nll", "test_mi", "kl_per_dim")


def spec_of(*extra: tuple[str, Any]) -> SweepSpec:
    return build_spec(None, [*SMALL, *extra])


def summaries(out: Path, name: str = "default") -> dict[str, dict[str, Any]]:
    found = (out / name / "runs").glob("*/summary.json")
    return {p.parent.name: json.loads(p.read_text()) for p in found}


def model_params(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / schema.MODEL_FILE, weights_only=True)["params"]


def test_a_pretraining_is_planned_once_and_trained_once_for_many_runs(tmp_path: Path) -> None:
    spec = spec_of(("pretrain.epochs", 2), ("grid.lambda", [0, 0.5, 1]), ("grid.seed", [0, 1]))
    plan = executor.plan(spec, tmp_path)
    # One pretraining per seed: λ acts after it, so three runs share each.
    assert len(plan.runs) == 6 and len(plan.pretrainings) == 2
    assert {p.folder.parent.name for p in plan.pretrainings} == {schema.PRETRAIN_DIR}
    assert {p.state for p in plan.pretrainings} == {"pending"}
    pre = plan.pretrainings[0].run
    assert (pre.train.epochs, pre.free_bits.lam, pre.anneal.beta_max) == (2, 0.0, 0.0)
    started: list[tuple[str, ...]] = []
    sweeps.run(spec, tmp_path, on_epoch=lambda ids, e, n: started.append(tuple(ids)))
    pre_ids = {p.run.run_id for p in plan.pretrainings}
    # Each pretraining's epochs ran once (before the runs), and each ended complete.
    pre_epochs = [ids for ids in started if set(ids) <= pre_ids]
    assert sum(len(ids) for ids in pre_epochs) == 2 * 2
    assert started.index(pre_epochs[-1]) < min(
        i for i, ids in enumerate(started) if not set(ids) & pre_ids
    )
    for item in plan.pretrainings:
        assert (item.folder / schema.SUMMARY).exists() and (
            item.folder / schema.MODEL_FILE
        ).exists()
        rows = (item.folder / schema.METRICS_CSV).read_text().splitlines()
        assert len(rows) == 1 + 2 and all(",0.0," in r for r in rows[1:])  # β = 0 every epoch
    assert len(summaries(tmp_path)) == 6
    again = executor.plan(spec, tmp_path)
    assert not again.todo and not again.pretrainings  # nothing left: no pretraining needed
    # A new λ trains one run, from the pretraining already there (not trained again).
    stamp = {p.folder: (p.folder / schema.MODEL_FILE).stat().st_mtime_ns for p in plan.pretrainings}
    grown = spec_of(("pretrain.epochs", 2), ("grid.lambda", [0, 0.5, 1, 2]), ("grid.seed", [0, 1]))
    plan2 = executor.plan(grown, tmp_path)
    assert len(plan2.todo) == 2 and {p.state for p in plan2.pretrainings} == {"done"}
    sweeps.run(grown, tmp_path)
    assert stamp == {f: (f / schema.MODEL_FILE).stat().st_mtime_ns for f in stamp}


def test_the_run_starts_from_the_pretrained_encoder_and_a_fresh_decoder(tmp_path: Path) -> None:
    spec = spec_of(("pretrain.epochs", 2), ("grid.lambda", [0.5]))
    sweeps.run(spec, tmp_path)
    (run,) = spec.expand()
    folder = pretrain.folder_of(tmp_path / "default", pretrain.pretraining_of(run))
    trained = model_params(folder)
    data = dataset(run.dataset)
    member = Member(run, tmp_path / "x", {}, init_from=folder, encoder_only=True)
    trainer = PackTrainer([member], data, torch.device("cpu"))
    x = trainer.x_train[:2].unsqueeze(0)
    encoder = warm_start.encoder_names(trainer.model, x)
    names = {n for n, _ in trainer.model.named_parameters()}
    assert encoder and encoder < names
    # The MLP's inference network: its hidden layer and the layer that gives μ, log σ².
    assert encoder == {"encoder.0.weight", "encoder.0.bias", "to_stats.weight", "to_stats.bias"}
    fresh = build_model(run.model, data.image_shape, 1, data.vocab_size)
    fresh.reset([generator(torch.device("cpu"), stream_seed(run.train.seed, "reset"))])
    fresh_params = dict(fresh.named_parameters())
    for name, param in trainer.model.named_parameters():
        if name in encoder:  # the pretrained encoder, bit for bit
            assert torch.equal(param[0], trained[name]), name
        else:  # the decoder drawn afresh from the run's "reset" stream, not the pretrained one
            assert torch.equal(param[0], fresh_params[name][0]), name
            assert not torch.equal(param[0], trained[name]), name


def test_pretraining_then_run_equals_two_hand_run_phases(tmp_path: Path) -> None:
    """Without a decoder reset, a run after pretraining is a run started from the autoencoder's
    model.pt: the pretraining trained by hand as a plain run, then `init.from` it."""
    spec = spec_of(("pretrain.epochs", 2), ("pretrain.reset_decoder", False), ("grid.lambda", [1]))
    sweeps.run(spec, tmp_path / "joint")
    (run,) = spec.expand()
    pre = pretrain.pretraining_of(run)
    assert pre is not None
    # Phase 1 by hand: the autoencoder as an ordinary run (β ≡ 0 via the linear schedule 0 → 0).
    phase1 = spec_of(
        ("train.epochs", 2), ("anneal.schedule", "linear"), ("anneal.beta_max", 0.0),
        ("eval.iwae_samples", 0), ("eval.mi", False), ("eval.samples", 0), ("grid.lambda", [0]),
    )  # fmt: skip
    (hand,) = phase1.expand()
    assert hand.run_id == pre.run_id  # the same run, so the same numbers
    sweeps.run(phase1, tmp_path / "phase1")
    folder1 = tmp_path / "phase1/default/runs" / hand.run_id
    shared = pretrain.folder_of(tmp_path / "joint/default", pre)
    for name, value in model_params(shared).items():
        assert torch.equal(value, model_params(folder1)[name]), name
    # Phase 2 by hand: the run from phase 1's parameters.
    phase2 = spec_of(("init.from", str(folder1)), ("grid.lambda", [1]))
    sweeps.run(phase2, tmp_path / "phase2")
    (joint,) = summaries(tmp_path / "joint").values()
    (hand2,) = summaries(tmp_path / "phase2").values()
    for key in KEYS:
        assert joint[key] == hand2[key], key
    # And a warm start is not a fresh start.
    sweeps.run(spec_of(("grid.lambda", [1])), tmp_path / "cold")
    (cold,) = summaries(tmp_path / "cold").values()
    assert cold["test_elbo"] != joint["test_elbo"]


class Interrupt(Exception):
    pass


def test_a_kill_during_pretraining_resumes_to_identical_numbers(tmp_path: Path) -> None:
    spec = spec_of(("pretrain.epochs", 3), ("grid.lambda", [0, 1]))
    sweeps.run(spec, tmp_path / "straight")
    pre_ids = {p.run.run_id for p in executor.plan(spec, tmp_path / "fresh").pretrainings}

    def stop_in_pretraining(ids: Any, epoch: int, epochs: int) -> None:
        if set(ids) <= pre_ids and epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweeps.run(spec, tmp_path / "resumed", on_epoch=stop_in_pretraining)
    plan = executor.plan(spec, tmp_path / "resumed")
    assert [(p.state, p.start_epoch) for p in plan.pretrainings] == [("interrupted", 2)]
    assert {r.state for r in plan.runs} == {"pending"}
    sweeps.run(spec, tmp_path / "resumed")
    straight, resumed = summaries(tmp_path / "straight"), summaries(tmp_path / "resumed")
    assert straight.keys() == resumed.keys() and len(straight) == 2
    for run_id, expected in straight.items():
        for key in KEYS:
            assert resumed[run_id][key] == expected[key], (run_id, key)


def test_a_pack_trains_a_missing_pretraining_itself(tmp_path: Path) -> None:
    """What a cluster job (or a second sweep) does: the pack finds its pretraining missing and
    trains it under its lock before the run starts."""
    spec = spec_of(("pretrain.epochs", 1), ("grid.lambda", [0.5]))
    plan = executor.plan(spec, tmp_path)
    outcomes = executor.train_pack(plan.todo, plan.grid_paths, "cpu")
    assert [o.state for o in outcomes] == ["done"]
    assert (plan.pretrainings[0].folder / schema.SUMMARY).exists()


def test_init_from_is_checked_with_one_line(tmp_path: Path) -> None:
    sweeps.run(spec_of(("grid.lambda", [0])), tmp_path / "a")
    (folder,) = (tmp_path / "a/default/runs").iterdir()
    assert (folder / schema.MODEL_FILE).exists()
    wider = spec_of(("model.latent_dim", 5), ("init.from", str(folder)), ("grid.lambda", [0]))
    shapes = r"to_stats.weight is \(16, 6\), the model.s is \(16, 10\)"
    with pytest.raises(SpecError, match=f"does not fit this run.s model: {shapes}"):
        sweeps.run(wider, tmp_path / "b")
    missing = spec_of(("init.from", str(tmp_path / "nowhere")), ("grid.lambda", [0]))
    with pytest.raises(SpecError, match=r"init\.from: .*nowhere does not exist"):
        sweeps.run(missing, tmp_path / "c")
    with pytest.raises(SpecError, match="not both"):
        spec_of(("init.from", str(folder)), ("pretrain.epochs", 1))
    with pytest.raises(SpecError, match=r"pretrain\.epochs: must be >= 0"):
        spec_of(("pretrain.epochs", -1))


def test_default_runs_keep_their_ids() -> None:
    """The new fields at their defaults leave a run's identity (and id) as it was."""
    run = spec_of(("grid.lambda", [0.5])).expand()[0]
    tree = run.identity()
    assert "pretrain" not in tree and "init" not in tree
    assert "aggressive" not in tree["train"] and "aggressive_steps" not in tree["train"]
