"""What a finished run shows of itself: test examples, their reconstructions and draws from the
prior, the same for every run of a sweep so the report compares like with like.

Images: decoder means, in samples.npz. Text: sentences in samples.json — test sentences, their
greedy reconstructions from the posterior mean, greedy decodes of prior draws, and a homotopy
(decodes along the line between two test sentences' posterior means, Bowman et al. 2016); beside
the greedy ones, the same reconstructions and prior draws decoded by sampling each word at the
run's `eval.temperature` (a greedy decode of a collapsed model repeats its most likely phrase
whatever z is, a sampled one shows what the decoder's distribution holds) — and the vocabulary in
vocab.json. Every decode stops at `</s>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freebits_cli import schema
from freebits_cli.data import BOS, DATA_SEED, EOS, PAD, Dataset, detokenize
from freebits_cli.models import packing
from freebits_cli.results import records, storage

#: Points along a homotopy, its two ends included (Bowman et al. 2016 show 5 to 7).
HOMOTOPY_POINTS = 7


def _per_member(model: Any, fn: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """fn(model) for the whole pack (GPU) or member by member (CPU, as the metrics do)."""
    if packing.batched(next(model.parameters()).device):
        return fn(model)
    return torch.cat([fn(view) for view in packing.member_views(model)])


@torch.no_grad()
def save_samples(
    model: Any,
    data: Dataset,
    x_test: torch.Tensor,
    folders: Sequence[Path],
    count: int,
    generators: Sequence[torch.Generator] = (),
    temperature: float = 1.0,
) -> None:
    """Write each member's samples into its folder; files already there are kept (a run resumed
    after a kill in here keeps what it wrote). Text: `generators` (one per member, its own
    stream) draw the sampled decodes; without them only the greedy ones are written."""
    if not count:
        return
    device = x_test.device
    pick = torch.from_numpy(np.random.default_rng(DATA_SEED).permutation(len(x_test))[:count])
    originals = x_test[pick.to(device)]
    k = len(folders)
    prior = torch.randn(
        count,
        model.latent_dim,
        generator=torch.Generator(device).manual_seed(DATA_SEED),
        device=device,
    ).expand(k, count, -1)
    mu = _per_member(model, lambda m: m.encode(originals.expand(m.members, *originals.shape))[0])
    if data.is_text:
        _save_sentences(model, data, originals, mu, prior, folders, generators, temperature)
        return
    # The grayscale images above their reconstructions, not the binarised sample the model saw.
    shown = (
        originals.cpu().numpy() if data.x_test_shown is None else data.x_test_shown[pick.numpy()]
    )
    recons = _per_member(model, lambda m: m.mean(m.decode(mu[_rows(m, mu)])))
    drawn = _per_member(model, lambda m: m.mean(m.decode(prior[_rows(m, prior)])))
    for i, folder in enumerate(folders):
        if (folder / schema.SAMPLES).exists():
            continue
        records.write_samples(
            folder,
            data.image_shape,
            originals=shown,
            reconstructions=recons[i].cpu().numpy(),
            prior_samples=drawn[i].cpu().numpy(),
        )


def greedy_decode(model: Any, z: torch.Tensor, steps: int) -> torch.Tensor:
    """The most likely token at each step given z (K, B, D) and the tokens so far: ids (K, B,
    steps), `<pad>` after each `</s>`. Any text model's `decode(z, x)` serves: each step rescores
    the prefix (T² work, fine for the few sentences a report shows)."""
    return _decode(model, z, steps, lambda logits: logits.argmax(-1))


def sample_decode(
    model: Any,
    z: torch.Tensor,
    steps: int,
    temperature: float,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Each token drawn from softmax(logits / temperature) given z (K, B, D) and the tokens so far,
    member k's draws from `generators[k]`: ids (K, B, steps), `<pad>` after each `</s>`. Drawn as
    argmax(logits / T + Gumbel noise), exactly a categorical draw (Gumbel-max), with the uniforms
    from each member's own generator so its sentences do not depend on its pack."""

    def pick(logits: torch.Tensor) -> torch.Tensor:
        uniform = torch.stack(
            [torch.rand(logits.shape[1:], generator=g, device=logits.device) for g in generators]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        return (logits / temperature + gumbel).argmax(-1)

    return _decode(model, z, steps, pick)


def _decode(
    model: Any, z: torch.Tensor, steps: int, pick: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    x = torch.full((*z.shape[:2], steps), PAD, dtype=torch.long, device=z.device)
    done = torch.zeros(z.shape[:2], dtype=torch.bool, device=z.device)
    for t in range(steps):
        logits = model.decode(z, x)[..., t, :].float()
        logits[..., [PAD, BOS]] = -torch.inf  # never a next token: no target is either
        token = pick(logits)
        x[..., t] = torch.where(done, PAD, token)
        done |= token == EOS  # the sentence ends at its `</s>`: padding from here on
        if bool(done.all()):
            break
    return x


def _rows(model: Any, tensor: torch.Tensor) -> slice:
    """The slice of a pack-wide (K, …) tensor a model (the pack, or one member's view) owns."""
    if model.members == tensor.shape[0]:
        return slice(None)
    return slice(model.index, model.index + 1)


def _save_sentences(
    model: Any,
    data: Dataset,
    originals: torch.Tensor,
    mu: torch.Tensor,
    prior: torch.Tensor,
    folders: Sequence[Path],
    generators: Sequence[torch.Generator],
    temperature: float,
) -> None:
    steps = data.image_shape[0]
    # Homotopy between the posterior means of the first two test sentences picked.
    weights = torch.linspace(0, 1, HOMOTOPY_POINTS, device=mu.device).view(1, -1, 1)
    line = (1 - weights) * mu[:, :1] + weights * mu[:, 1:2] if mu.shape[1] > 1 else mu[:, :1]
    decoded = {
        "reconstructions": _per_member(model, lambda m: greedy_decode(m, mu[_rows(m, mu)], steps)),
        "prior_samples": _per_member(
            model, lambda m: greedy_decode(m, prior[_rows(m, prior)], steps)
        ),
        "homotopy": _per_member(model, lambda m: greedy_decode(m, line[_rows(m, line)], steps)),
    }
    if generators:
        gens = list(generators)

        def sampled(z: torch.Tensor) -> torch.Tensor:
            return _per_member(
                model,
                lambda m: sample_decode(m, z[_rows(m, z)], steps, temperature, gens[_rows(m, z)]),
            )

        # Reconstructions first, then prior draws, each member from its own stream.
        decoded["sampled_reconstructions"] = sampled(mu)
        decoded["sampled_prior_samples"] = sampled(prior)
    vocab = data.vocab
    test = [detokenize(row, vocab) for row in originals.cpu().numpy()]
    for i, folder in enumerate(folders):
        if not (folder / schema.VOCAB).exists():
            storage.write_json(folder / schema.VOCAB, {"tokens": list(vocab)})
        if (folder / schema.SENTENCES).exists():
            continue
        record = {"originals": test}
        for key, ids in decoded.items():
            record[key] = [detokenize(row, vocab) for row in ids[i].cpu().numpy()]
        storage.write_json(folder / schema.SENTENCES, record)
