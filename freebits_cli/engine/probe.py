"""Is z useful? A linear probe of the code (Li et al. 2019 evaluate the latent space by
classification): a logistic regression fitted on the training set's posterior means E_q[z|x] (or
samples z ~ q(z|x): `eval.probe_features`) and scored on the test set's, one per member. Where the
data has no labels there is no probe.

Samples come from a stream of their own (the means need none, and scikit-learn's lbfgs solver is
deterministic), so the probe changes none of a run's other numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from freebits_cli.data import DATA_SEED
from freebits_cli.engine.metrics import draw_noise, eval_chunk, trim
from freebits_cli.models import packing

#: At most this many training examples fit the probe (a fixed random subset, the same for every
#: run): enough for a linear classifier of a few dozen features, and seconds on a CPU for any data
#: set (MNIST's 60,000 would take minutes per run for the same accuracy to a few tenths).
PROBE_TRAIN = 10_000
#: lbfgs iterations; standardised features converge well within them.
PROBE_ITERATIONS = 1_000


@torch.no_grad()
def codes(
    model: Any, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None
) -> np.ndarray:
    """E_q[z|x] of every member for x (N, …), or with `generators` (one per member) one draw
    z ~ q(z|x) each: float64 (K, N, D), member by member on a CPU (as the metrics are), so a
    member's codes do not depend on its pack."""
    batched = packing.batched(x.device)
    views = [model] if batched else list(packing.member_views(model))
    per_view = []
    for v, view in enumerate(views):
        parts = []
        for chunk in x.split(eval_chunk(view)):
            chunk = trim(chunk)
            mu, logvar = view.encode(chunk.expand(view.members, *chunk.shape))
            if generators is not None:
                own = generators if batched else [generators[v]]
                mu = mu + draw_noise(mu.shape[1:], own, x.device) * (0.5 * logvar).exp()
            parts.append(mu)
        per_view.append(torch.cat(parts, 1))
    return torch.cat(per_view).double().cpu().numpy()


def probe_accuracy(
    model: Any,
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    y_test: np.ndarray,
    generators: Sequence[torch.Generator] | None = None,
    binarize: bool = False,
) -> list[float]:
    """Test accuracy of a multinomial logistic regression on standardised codes (posterior means,
    or with `generators` one sample each: `codes`), fitted on (at most PROBE_TRAIN) training
    examples': one value per member (NaN when the training labels hold a single class: nothing to
    tell apart). `binarize`: the model trained on dynamically binarised images, so the probe's
    training images are binarised once (a fixed sample, as the test set is) rather than read in
    grayscale."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    if len(y_train) > PROBE_TRAIN:
        rows = np.sort(np.random.default_rng(DATA_SEED).permutation(len(y_train))[:PROBE_TRAIN])
        x_train, y_train = x_train[torch.from_numpy(rows).to(x_train.device)], y_train[rows]
    if len(np.unique(y_train)) < 2:
        return [math.nan] * model.members
    if binarize:
        coins = torch.Generator(x_train.device).manual_seed(DATA_SEED)
        x_train = (torch.rand(x_train.shape, generator=coins, device=x_train.device) < x_train).to(
            x_train.dtype
        )
    train, test = codes(model, x_train, generators), codes(model, x_test, generators)
    out = []
    # numpy's BLAS takes the threads torch was given: by default it starts one per core in every
    # process, and beside the sweep's other one-thread workers its spinning threads oversubscribe
    # the cores (measured: the probe 10× slower in each of two workers on 2 cores).
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        for k in range(train.shape[0]):
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_ITERATIONS))
            # A collapsed code's near-constant means converge slowly.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                probe.fit(train[k], y_train)
            out.append(float(probe.score(test[k], y_test)))
    return out
