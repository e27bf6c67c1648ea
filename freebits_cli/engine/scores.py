"""A pack's held-out numbers after an epoch, as metrics.csv columns (one value per member): the
ELBO and its terms, active units, and where due the IWAE bound, mutual information with its
interval and the marginal KL, the linear probe, bits per dimension (8-bit images) and perplexity
(text)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from freebits_cli.engine.metrics import (
    Evaluation,
    active_units,
    evaluate,
    information,
    iwae_nll,
    mi_draws,
)
from freebits_cli.models.likelihoods import bits_per_dim, likelihood, predicted_tokens
from freebits_cli.spec import RunConfig

#: A named evaluation stream -> one generator per member (seeded from each member's own seed).
Streams = Callable[[str], list[torch.Generator]]
Columns = dict[str, list[Any] | None]
#: The linear probe's test accuracy of every member of a model (engine.probe), where there are
#: labels, given the generators of its samples (None: it reads the posterior means).
Probe = Callable[[Any, list[torch.Generator] | None], list[float]]


def test_scores(
    model: Any,
    x: torch.Tensor,
    run: RunConfig,
    streams: Streams,
    epoch: int,
    text: bool,
    probe: Probe | None = None,
) -> tuple[Columns, Evaluation]:
    """Test-set columns of every member after `epoch` (1-based; the IWAE bound, MI, marginal KL
    and probe at the end of training, and the IWAE bound every `eval.iwae_every` epochs)."""
    spec = run.eval
    final = epoch == run.train.epochs
    ev = evaluate(model, x, streams("eval"))
    iwae = None
    if spec.iwae_samples and (final or (spec.iwae_every and epoch % spec.iwae_every == 0)):
        iwae = iwae_nll(model, x, spec.iwae_samples, streams("iwae")).tolist()
    info: Columns = dict.fromkeys(("test_mi", "test_mi_lo", "test_mi_hi", "test_marginal_kl"))
    if spec.mi and final:
        batch = spec.mi_batch if spec.mi_estimator == "batch" else None
        draws = mi_draws(spec.mi_draws, x.shape[0], batch)
        got = information(model, x, streams("mi"), draws=draws, batch=batch)
        info = {
            "test_mi": got.mi.tolist(),
            "test_mi_lo": got.mi_lo.tolist(),
            "test_mi_hi": got.mi_hi.tolist(),
            "test_marginal_kl": got.marginal_kl.tolist(),
        }
    accuracy = None
    if probe is not None and spec.probe and final:
        accuracy = probe(model, streams("probe") if spec.probe_features == "sample" else None)
    # One device-to-host transfer per quantity, not one per member and value.
    values: Columns = {
        "test_elbo": ev.elbo.tolist(),
        "test_recon": ev.recon.tolist(),
        "test_kl": ev.kl.tolist(),
        "active_units": active_units(ev.au_variance, spec.au_threshold).tolist(),
        "active_units_kl": (ev.kl_per_dim > spec.kl_threshold).sum(-1).tolist(),
        "test_iwae_nll": iwae,
        **info,
        "test_probe_accuracy": accuracy,
    }
    if likelihood(run.model.likelihood).eight_bit:
        # Bits per dimension, NLL / (C·H·W · ln 2), from the true KL (the ELBO) and the IWAE.
        dims = model.input_dim
        values["test_bits_per_dim"] = bits_per_dim(-ev.elbo, dims).tolist()
        values["test_iwae_bits_per_dim"] = (
            None
            if iwae is None
            else bits_per_dim(torch.tensor(iwae, dtype=torch.float64), dims).tolist()
        )
    if text:
        values.update(perplexities(x, ev.elbo, iwae))
    return values, ev


def perplexities(x: torch.Tensor, elbo: torch.Tensor, iwae: list[float] | None) -> Columns:
    """Test perplexity exp(Σ NLL / Σ predicted tokens) (`</s>` counted, `<s>` not), from the IWAE
    NLL and, a bound (never below it in expectation), from -ELBO (Bowman et al. 2016; He et al.
    2019)."""
    per_token = x.shape[0] / float(predicted_tokens(x).sum())
    from_elbo = torch.exp(-elbo.double() * per_token).tolist()
    from_iwae = None if iwae is None else [math.exp(v * per_token) for v in iwae]
    return {"test_ppl": from_iwae, "test_elbo_ppl": from_elbo}
