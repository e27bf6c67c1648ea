"""Text: corpora as token ids, the packed LSTM VAE, masking, perplexity, and free bits against
posterior collapse on sentences whose one global fact a decoder can read off their first words."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sweeps
import torch
from faults import Kill, count_writes
from text_corpus import CHAIN_WORDS, write_corpus
from typer.testing import CliRunner

from freebits_cli.cli import app
from freebits_cli.data import PAD, SPECIALS, UNK, detokenize, load_dataset
from freebits_cli.engine import metrics
from freebits_cli.errors import DataError
from freebits_cli.models import build_model, packing
from freebits_cli.spec import DatasetSpec, ModelSpec, SweepSpec
from freebits_cli.spec.files import build_spec

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def small(corpus: Path, *extra: tuple[str, Any]) -> SweepSpec:
    return build_spec(
        None,
        [
            ("dataset.name", "text"),
            ("dataset.data_dir", str(corpus)),
            ("model.embedding_dim", 8),
            ("model.hidden", [16]),
            ("model.latent_dim", 3),
            ("train.epochs", 2),
            ("train.batch_size", 64),
            ("train.device", "cpu"),
            ("eval.iwae_samples", 4),
            ("eval.samples", 2),
            *extra,
        ],
    )


def train(spec: SweepSpec, out: Path, pack_size: int = 0) -> None:
    outcomes = sweeps.train(spec, out, pack_size=pack_size)
    assert all(o.state == "done" for o in outcomes), outcomes


def rows(out: Path, name: str = "default") -> dict[str, list[dict[str, str]]]:
    found = {}
    for path in sorted((out / name / "runs").glob("*/metrics.csv")):
        with open(path) as handle:
            found[path.parent.name] = [
                {k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)
            ]
    return found


# -- corpora -------------------------------------------------------------------------------------


def test_vocabulary_unk_label_prefix_and_ptb_names(tmp_path: Path) -> None:
    (tmp_path / "ptb.train.txt").write_text("5\tb a b\n\n3\tc b a b\n")
    (tmp_path / "ptb.valid.txt").write_text("1\ta zebra\n")
    (tmp_path / "ptb.test.txt").write_text("2\tb <unk> a\n")
    spec = DatasetSpec(name="text", data_dir=str(tmp_path), strip_label=True)
    data = load_dataset(spec)
    # Specials first, then by falling count (b: 4, a: 3, c: 1).
    assert data.vocab == (*SPECIALS, "b", "a", "c")
    assert data.x_train.tolist() == [[4, 5, 4, 2, 0], [6, 4, 5, 4, 2]]  # words, </s>, padding
    assert data.x_valid.tolist() == [[5, UNK, 2, 0, 0]]  # unseen "zebra" -> <unk>
    assert detokenize(data.x_test[0], data.vocab) == "b <unk> a"
    capped = load_dataset(DatasetSpec(name="text", data_dir=str(tmp_path), strip_label=True,
                                      max_vocab=5, min_count=1))  # fmt: skip
    assert capped.vocab == (*SPECIALS, "b")
    rare = load_dataset(DatasetSpec(name="text", data_dir=str(tmp_path), strip_label=True,
                                    min_count=2))  # fmt: skip
    assert rare.vocab == (*SPECIALS, "b", "a")
    unstripped = load_dataset(DatasetSpec(name="text", data_dir=str(tmp_path)))
    assert "5" in unstripped.vocab and "3" in unstripped.vocab


def test_long_sentences_are_dropped_or_cut_and_said(tmp_path: Path) -> None:
    for name in ("train", "valid", "test"):
        (tmp_path / f"{name}.txt").write_text("a b c d e\na b\n")
    dropped = load_dataset(DatasetSpec(name="text", data_dir=str(tmp_path), max_length=3))
    assert dropped.x_train.tolist() == [[4, 5, 2]]
    assert "1 of 2 sentences longer than 3 words dropped" in dropped.notes[0]
    cut = load_dataset(
        DatasetSpec(name="text", data_dir=str(tmp_path), max_length=3, long_sentences="cut")
    )
    assert cut.x_train.tolist() == [[4, 5, 6, 2], [4, 5, 2, 0]]
    assert "cut to 3" in cut.notes[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "corpus file not found"),
        (b"\n  \n", "holds no sentence"),
        (b"caf\xe9 au lait\n", "not UTF-8"),
        (b"one two three four five six\n", "no sentence within dataset.max_length=2"),
    ],
    ids=["missing", "empty", "latin-1", "all too long"],
)
def test_bad_corpora_are_one_line_and_exit_2(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    write_corpus(tmp_path)
    if content is None:
        (tmp_path / "valid.txt").unlink()
        spec = DatasetSpec(name="text", data_dir=str(tmp_path), valid=str(tmp_path / "valid.txt"))
    else:
        (tmp_path / "train.txt").write_bytes(content)
        spec = DatasetSpec(name="text", data_dir=str(tmp_path), max_length=2)
    with pytest.raises(DataError, match=message):
        load_dataset(spec)
    args = ["sweep", "--dataset", "text", "--data-dir", str(tmp_path), "--epochs", "1"]
    args += (
        ["--set", "dataset.max_length=2"]
        if content
        else ["--set", f"dataset.valid={tmp_path / 'valid.txt'}"]
    )
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("dataset.max_vocab=0", "dataset.max_vocab"),
        ("dataset.max_length=0", "dataset.max_length"),
        ("model.likelihood=logistic", "model.likelihood"),
        ("model.arch=conv", "model.arch"),
        ("model.z_to=[input,cell]", "model.z_to[1]"),
        ("model.dropout=1", "model.dropout"),
    ],
)
def test_bad_text_specs_are_one_line_and_exit_2(corpus: Path, setting: str, field: str) -> None:
    args = ["sweep", "--dataset", "text", "--data-dir", str(corpus), "--set", setting]
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert field in result.output and len(result.output.strip().splitlines()) == 1


def test_lstm_or_categorical_on_images_is_refused() -> None:
    for setting in ("model.arch=lstm", "model.likelihood=categorical"):
        result = runner.invoke(app, ["sweep", "--set", setting, "--dry-run"])
        assert result.exit_code == 2 and "holds images" in result.output, result.output


def test_text_defaults_follow_the_data(corpus: Path) -> None:
    run = small(corpus).expand()[0]
    assert (run.model.arch, run.model.likelihood) == ("lstm", "categorical")
    plain = build_spec(None, [("dataset.name", "text"), ("dataset.data_dir", str(corpus))])
    assert plain.expand()[0].model.hidden == (256,)
    # The corpus folder is part of a text run's identity ("text" names no corpus).
    other = build_spec(None, [("dataset.name", "text"), ("dataset.data_dir", "elsewhere")])
    assert other.expand()[0].run_id != plain.expand()[0].run_id


# -- the model -----------------------------------------------------------------------------------


def _lstm(members: int, vocab: int = 12, **kwargs: Any) -> Any:
    spec = ModelSpec(arch="lstm", likelihood="categorical", embedding_dim=6, hidden=(8, 7),
                     latent_dim=3, **kwargs)  # fmt: skip
    model = build_model(spec, (9,), members, vocab)
    model.reset([torch.Generator().manual_seed(s) for s in range(members)])
    return model


def _sentences(batch: int, width: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """Random sentences of 1..width tokens (the last `</s>` = 2), padded with 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(4, vocab, (batch, width), generator=gen)
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    positions = torch.arange(width)
    x[positions >= lengths[:, None]] = PAD
    x[torch.arange(batch), lengths - 1] = 2
    return x


def test_padding_never_changes_a_loss() -> None:
    model = _lstm(1)
    x = _sentences(5, 6, 12).unsqueeze(0)
    padded = torch.cat([x, torch.zeros(1, 5, 4, dtype=torch.long)], dim=-1)
    z = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(1))
    mu_a, logvar_a = model.encode(x)
    mu_b, logvar_b = model.encode(padded)
    torch.testing.assert_close(mu_a, mu_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(logvar_a, logvar_b, rtol=0, atol=1e-6)
    nll_a = model.nll(model.decode(z, x), x)
    nll_b = model.nll(model.decode(z, padded), padded)
    torch.testing.assert_close(nll_a, nll_b, rtol=0, atol=1e-5)
    # Each sentence's NLL is its own: scoring it alone, unpadded, gives the same number.
    for i in range(5):
        n = int((x[0, i] != PAD).sum())
        alone = x[:, i : i + 1, :n]
        nll = model.nll(model.decode(z[:, i : i + 1], alone), alone)
        torch.testing.assert_close(nll[0, 0], nll_a[0, i], rtol=0, atol=1e-5)


def test_categorical_nll_is_the_sum_of_token_log_probabilities() -> None:
    model = _lstm(1)
    x = _sentences(3, 5, 12, seed=2).unsqueeze(0)
    z = torch.zeros(1, 3, 3)
    logits = model.decode(z, x)
    log_p = torch.log_softmax(logits, -1)
    by_hand = [
        -sum(float(log_p[0, i, t, x[0, i, t]].detach()) for t in range(5) if x[0, i, t] != PAD)
        for i in range(3)
    ]
    assert model.nll(logits, x)[0].tolist() == pytest.approx(by_hand, abs=1e-5)


@pytest.mark.parametrize("z_to", [("input", "state"), ("input",), ("state",), ()])
def test_batched_recurrence_agrees_with_the_member_loop(z_to: tuple[str, ...]) -> None:
    """The GPU path (one recurrence over K stacked weight sets), run on the CPU, against each
    member through torch's own LSTM: float rounding apart."""
    model = _lstm(3, z_to=z_to)
    x = _sentences(4, 9, 12, seed=3).expand(3, -1, -1)
    z = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(4))
    mu, logvar = model.encode(x)
    logits = model.decode(z, x)
    for k, view in enumerate(packing.member_views(model)):
        mu_k, logvar_k = view.encode(x[k : k + 1])
        torch.testing.assert_close(mu[k : k + 1], mu_k, rtol=0, atol=1e-5)
        torch.testing.assert_close(logvar[k : k + 1], logvar_k, rtol=0, atol=1e-5)
        torch.testing.assert_close(logits[k : k + 1], view.decode(z[k : k + 1], x[k : k + 1]),
                                   rtol=0, atol=1e-5)  # fmt: skip
    if not z_to:  # a language model: z changes nothing
        assert torch.equal(logits, model.decode(torch.zeros_like(z), x))


def test_dropout_comes_from_the_noise_it_is_given() -> None:
    model = _lstm(1, dropout=0.5, word_dropout=0.5)
    assert model.noise_width == 6 + 7 + 1
    x = _sentences(4, 9, 12).unsqueeze(0)
    z = torch.zeros(1, 4, 3)
    keep = torch.ones(1, 4, 9, model.noise_width)  # u = 1: no unit and no word dropped
    words_out = keep.clone()
    words_out[..., -1] = 0  # every word-dropout coin lands: inputs become <unk>, never <s>
    kept, unked = model.decode(z, x, keep), model.decode(z, x, words_out)
    torch.testing.assert_close(kept[:, :, 0], unked[:, :, 0])  # position 0 reads <s>
    assert not torch.allclose(kept[:, :, 1:], unked[:, :, 1:])
    drop = torch.rand(1, 4, 9, model.noise_width, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(model.decode(z, x, drop), model.decode(z, x))
    torch.testing.assert_close(model.decode(z, x, drop), model.decode(z, x, drop.clone()))


# -- training and metrics ------------------------------------------------------------------------


def test_packed_equals_pack_of_one_bit_for_bit_with_mixed_settings(
    corpus: Path, tmp_path: Path
) -> None:
    spec = small(
        corpus,
        ("model.dropout", 0.3),
        ("model.word_dropout", 0.25),
        ("grid.lambda", [0, 0.5]),
        ("grid.anneal", ["none", "linear"]),
    )
    train(spec, tmp_path / "packed")
    train(spec, tmp_path / "single", pack_size=1)
    packed, single = rows(tmp_path / "packed"), rows(tmp_path / "single")
    assert len(packed) == 4 and packed == single  # every column of every epoch, exactly
    assert len({r[-1]["train_loss"] for r in packed.values()}) == 4  # settings differ
    last = next(iter(packed.values()))[-1]
    # -ELBO bounds the NLL in expectation; a one-sample ELBO of a collapsed model is within noise.
    assert 1 < float(last["test_ppl"]) <= float(last["test_elbo_ppl"]) * (1 + 1e-3)
    for folder in (tmp_path / "packed" / "default" / "runs").iterdir():
        sentences = json.loads((folder / "samples.json").read_text())
        assert len(sentences["originals"]) == 2 and len(sentences["homotopy"]) == 7
        vocab = json.loads((folder / "vocab.json").read_text())["tokens"]
        assert vocab[:4] == list(SPECIALS) and len(vocab) == 4 + CHAIN_WORDS


def test_sgd_with_per_run_clipping_packs_exactly(corpus: Path, tmp_path: Path) -> None:
    spec = small(
        corpus,
        ("train.optimizer", "sgd"),
        ("train.lr", 0.5),
        ("train.momentum", 0.5),
        ("train.grad_clip", 0.5),
        ("grid.lambda", [0, 2]),
        ("grid.seed", [0, 1]),
    )
    train(spec, tmp_path / "packed")
    train(spec, tmp_path / "single", pack_size=1)
    assert rows(tmp_path / "packed") == rows(tmp_path / "single")


def test_clipping_uses_each_members_own_norm() -> None:
    from freebits_cli.engine.step import PackStep, make_optimizer

    model = _lstm(2)
    opt = make_optimizer(model.parameters(), 0.1, 1e-8, torch.device("cpu"), False, "sgd")
    step = PackStep(model, opt, lambda kl, m: (kl.sum((-2, -1)), kl.sum((-2, -1))), 4,
                    torch.device("cpu"), dtype=torch.long, grad_clip=1.0)  # fmt: skip
    for k, ls in enumerate(zip(*step.leaves.values(), strict=True)):
        for leaf in ls:
            leaf.grad = torch.full_like(leaf, 10.0 if k == 0 else 1e-4)
    step._clip()
    norms = [
        math.sqrt(sum(float(leaf.grad.pow(2).sum()) for leaf in ls))
        for ls in zip(*step.leaves.values(), strict=True)
    ]
    assert norms[0] == pytest.approx(1.0, rel=1e-4)  # clipped to its own norm
    count = sum(p[0].numel() for p in model.parameters())
    assert norms[1] == pytest.approx(1e-4 * math.sqrt(count), rel=1e-4)  # untouched


def test_perplexity_is_exp_of_nll_per_predicted_token(corpus: Path, tmp_path: Path) -> None:
    spec = small(corpus, ("train.epochs", 1), ("grid.lambda", [0.5]))
    train(spec, tmp_path)
    (row,) = next(iter(rows(tmp_path).values()))
    data = load_dataset(spec.expand()[0].dataset)
    tokens = int((data.x_test != PAD).sum())  # words and </s> of every test sentence
    n = len(data.x_test)
    assert float(row["test_ppl"]) == pytest.approx(
        math.exp(float(row["test_iwae_nll"]) * n / tokens)
    )
    assert float(row["test_elbo_ppl"]) == pytest.approx(
        math.exp(-float(row["test_elbo"]) * n / tokens)
    )


def test_iwae_of_text_against_a_transcription() -> None:
    """log p(x) ≥ log (1/k) Σ p(x|z_i) p(z_i) / q(z_i|x) (Burda et al. 2015), by hand with the
    noise the metric draws; a budget of one byte (one sentence and sample at a time) stays close."""
    model = _lstm(1, vocab=30)
    x = _sentences(7, 9, 30, seed=5)
    k = 6
    one = metrics.iwae_nll(model, x, k, [torch.Generator().manual_seed(0)], budget=2**30)
    with torch.no_grad():
        mu, logvar = model.encode(x.unsqueeze(0))  # (1, 7, 3)
        eps = torch.randn(1, k, 7, 3, generator=torch.Generator().manual_seed(0))
        q = torch.distributions.Normal(mu.unsqueeze(1), (0.5 * logvar).exp().unsqueeze(1))
        z = q.loc + eps * q.scale
        log_w = torch.stack(
            [-model.nll(model.decode(z[:, i], x.unsqueeze(0)), x.unsqueeze(0)) for i in range(k)],
            dim=1,
        )  # (1, k, 7)
        log_w = log_w + torch.distributions.Normal(0, 1).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        by_hand = -(torch.logsumexp(log_w.double(), 1) - math.log(k)).mean()
    assert float(one[0]) == pytest.approx(float(by_hand), abs=1e-4)
    tiny = metrics.iwae_nll(model, x, k, [torch.Generator().manual_seed(0)], budget=1)
    assert abs(float(tiny[0]) - float(one[0])) < 0.5  # other noise, same estimator


def test_free_bits_keeps_units_alive_where_the_plain_vae_collapses(tmp_path: Path) -> None:
    """Four Markov chains over one vocabulary: at λ = 0 the LSTM decoder learns to infer the
    chain from the words so far and the posterior collapses (KL, AU, MI ≈ 0); at λ = 1 nat per
    unit the chain (log 4 = 1.39 nats) goes through z, and the decoder does better with it."""
    corpus = write_corpus(tmp_path / "markov", train=1000, test=1000, chains=4, seed=7)
    spec = build_spec(
        None,
        [
            ("dataset.name", "text"),
            ("dataset.data_dir", str(corpus)),
            ("model.embedding_dim", 16),
            ("model.hidden", [32]),
            ("model.latent_dim", 4),
            ("train.epochs", 6),
            ("train.batch_size", 32),
            ("train.lr", 1e-2),
            ("train.device", "cpu"),
            ("eval.iwae_samples", 0),
            ("eval.samples", 0),
            ("grid.lambda", [0, 1]),
        ],
    )
    train(spec, tmp_path / "out")
    summaries = [
        json.loads((f / "summary.json").read_text())
        for f in (tmp_path / "out" / "default" / "runs").iterdir()
    ]
    plain, free = sorted(summaries, key=lambda s: s["lambda"])
    assert plain["test_kl"] < 0.05 and plain["active_units"] == 0, plain
    assert abs(plain["test_mi"]) < 0.1, plain  # He et al.'s estimator: ±0.05 of noise here
    assert free["active_units"] >= 1 and free["test_kl"] > 1.0, free
    assert free["test_mi"] > 1.0, free  # the chain is in z
    assert free["test_recon"] < plain["test_recon"] - 0.5


def test_subsets_are_seeded_and_part_of_the_identity(corpus: Path) -> None:
    full = load_dataset(DatasetSpec(name="text", data_dir=str(corpus)))
    part = load_dataset(
        DatasetSpec(name="text", data_dir=str(corpus), train_size=100, test_size=50)
    )
    again = load_dataset(
        DatasetSpec(name="text", data_dir=str(corpus), train_size=100, test_size=50)
    )
    assert len(part.x_train) == 100 and len(part.x_test) == 50
    assert np.array_equal(part.x_train, again.x_train)
    rows_of_full = {tuple(r[r != PAD]) for r in full.x_train}
    assert all(tuple(r[r != PAD]) in rows_of_full for r in part.x_train)
    digits = load_dataset(DatasetSpec(train_size=300, test_size=100))
    assert digits.x_train.shape == (300, 64) and digits.x_test.shape == (100, 64)
    with pytest.raises(DataError, match=r"dataset\.train_size: 5000 is more than the"):
        load_dataset(DatasetSpec(train_size=5000))
    a = build_spec(None, [("dataset.train_size", 300)]).expand()[0]
    b = build_spec(None, []).expand()[0]
    assert a.run_id != b.run_id


def test_a_users_text_module_trains_packed(corpus: Path, tmp_path: Path) -> None:
    spec = small(corpus, ("model.module", "tiny_text_vae:TinyTextVAE"), ("grid.lambda", [0, 1]))
    train(spec, tmp_path / "packed")
    train(spec, tmp_path / "single", pack_size=1)
    packed = rows(tmp_path / "packed")
    assert packed == rows(tmp_path / "single") and len(packed) == 2
    assert all(math.isfinite(float(r[-1]["test_ppl"])) for r in packed.values())


def test_a_killed_text_sweep_resumes_to_the_same_numbers(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped before a write (checkpoints, rows, promotions, sentences, vocabulary, summaries) as
    a kill there would, then resumed: every number equals an uninterrupted sweep's."""
    spec = small(
        corpus, ("model.dropout", 0.2), ("eval.select", "best_valid"), ("grid.lambda", [0, 1])
    )

    def outputs(out: Path) -> dict[str, Any]:
        found = {}
        for folder in sorted((out / "default" / "runs").iterdir()):
            summary = json.loads((folder / "summary.json").read_text())
            for key in ("seconds", "pack_seconds", "device"):
                summary.pop(key)
            sentences = (folder / "samples.json").read_text()
            found[folder.name] = (summary, rows(out)[folder.name], sentences)
        return found

    with monkeypatch.context() as patch:
        writes = count_writes(patch, None)
        train(spec, tmp_path / "straight")
    expected = outputs(tmp_path / "straight")
    kill_points = sorted({4, len(writes) // 2, len(writes) - 2})  # mid-epoch 1, 2, finish
    for kill_at in kill_points:
        out = tmp_path / f"kill{kill_at}"
        with monkeypatch.context() as patch:
            count_writes(patch, kill_at)
            with pytest.raises(Kill):
                train(spec, out)
        train(spec, out)
        assert outputs(out) == expected, f"killed before write {kill_at}: {writes[kill_at - 1]}"


def test_text_runs_export_their_sentences_and_perplexity(corpus: Path, tmp_path: Path) -> None:
    """TensorBoard gets each run's sentences as text and perplexity as scalars, read back."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(small(corpus, ("train.epochs", 1), ("grid.lambda", [0.5])), tmp_path / "out")
    result = runner.invoke(
        app, ["export", str(tmp_path / "out"), "--to", f"tensorboard={tmp_path / 'tb'}"]
    )
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "out" / "default" / "runs").iterdir()
    sentences = json.loads((folder / "samples.json").read_text())
    (logdir,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    text = acc.Tensors("samples/originals/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text.split("\n\n") == sentences["originals"]
    scalars = {t for t in acc.Tags()["scalars"]}
    assert any("test_ppl" in t for t in scalars), scalars


def test_the_report_shows_sentences_and_perplexity(corpus: Path, tmp_path: Path) -> None:
    from freebits_cli.report import build_report

    train(small(corpus, ("train.epochs", 1), ("grid.lambda", [0, 1])), tmp_path)
    result = build_report(tmp_path)
    page = result.index_html.read_text(encoding="utf-8")
    folder = next((tmp_path / "default" / "runs").iterdir())
    sentences = json.loads((folder / "samples.json").read_text())
    assert 'id="sentences"' in page and "Homotopy" in page
    assert all(s.replace("'", "&#x27;") in page for s in sentences["originals"])
    summary = (result.out_dir / "summary.csv").read_text().splitlines()
    assert "test_ppl" in summary[0] and "test_elbo_ppl" in summary[0]
    assert (result.out_dir / "elbo.png").is_file() and not result.warnings


def test_a_text_sweep_from_the_command_line(corpus: Path, tmp_path: Path) -> None:
    """The whole command: plan, progress (its cost model builds the text model), train, table."""
    args = ["sweep", "--dataset", "text", "--data-dir", str(corpus), "--lambdas", "0,1"]
    args += [
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
        "--set",
        "model.hidden=[8]",
    ]
    args += ["--set", "model.embedding_dim=4", "--set", "eval.iwae_samples=2"]
    args += ["--set", "dataset.max_length=6", "--set", "eval.samples=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sentences longer than 6 words dropped" in result.output
    assert len(list((tmp_path / "default" / "runs").glob("*/summary.json"))) == 2
