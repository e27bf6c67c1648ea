"""The values each spec field accepts: the types are already checked, this checks ranges and names."""

from __future__ import annotations

import contextvars
import difflib
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from freebits_cli.errors import SpecError, SpecErrors


class RunLike(Protocol):
    """The sections of a `spec.RunConfig`, named here so this module does not import spec (spec
    imports this one: no import cycle, not even for type checking)."""

    dataset: Any
    model: Any
    train: Any
    free_bits: Any
    anneal: Any
    eval: Any
    pretrain: Any
    init: Any


FREE_BITS_MODES = ("batch", "example", "total", "group", "example_total")
SCHEDULES = ("none", "constant", "linear", "sigmoid", "cyclical")
BINARIZE = ("none", "dynamic", "static")
OUTPUT_BIASES = ("default", "data_mean")
ARCHS = ("mlp", "conv", "lstm")
LIKELIHOODS = ("bernoulli", "logistic", "logistic_mixture", "gaussian", "categorical")
DEQUANTIZE = ("none", "uniform")
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "text")
LONG_SENTENCES = ("drop", "cut")
Z_TO = ("input", "state")
OPTIMIZERS = ("adam", "sgd")
SELECT = ("last", "best_valid")
MI_ESTIMATORS = ("dataset", "batch")
PROBE_FEATURES = ("mean", "sample")
#: Token ids every vocabulary reserves (<pad> <s> </s> <unk>): a vocabulary needs one more.
SPECIAL_TOKENS = 4
MODULE_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "softplus", "leaky_relu")
PRECISIONS = ("fp32", "tf32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "burda")
LR_DECAYS = ("none", "plateau")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?(,cuda(:\d+)?)*)$")


def suggest(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class FieldErrors:
    """The errors found in one spec, the first per field, so all of them are reported at once."""

    def __init__(self) -> None:
        self.by_field: dict[str, SpecError] = {}

    def add(self, error: SpecError) -> None:
        for one in getattr(error, "errors", [error]):
            self.by_field.setdefault(one.field, one)

    @contextmanager
    def gather(self) -> Iterator[None]:
        """Record a SpecError raised inside instead of letting it stop the parse."""
        try:
            yield
        except SpecError as exc:
            self.add(exc)

    def raise_any(self) -> None:
        errors = list(self.by_field.values())
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise SpecErrors(errors)


#: While `validate_run` runs, the errors its checks find (a failed check does not stop the rest).
_FOUND: contextvars.ContextVar[FieldErrors | None] = contextvars.ContextVar("found", default=None)


def _check(ok: bool, where: str, message: str) -> None:
    if ok:
        return
    found = _FOUND.get()
    if found is None:
        raise SpecError(where, message)
    found.add(SpecError(where, message))


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _one_of(value: str, options: tuple[str, ...], where: str) -> None:
    _check(
        value in options,
        where,
        f"{value!r} is not one of {', '.join(options)}" + suggest(value, options),
    )


def validate_run(run: RunLike) -> None:
    """Check every field of a run; raise all that are wrong at once (SpecErrors), or the one."""
    found = FieldErrors()
    token = _FOUND.set(found)
    try:
        _validate_run(run)
    finally:
        _FOUND.reset(token)
    found.raise_any()


def _validate_run(run: RunLike) -> None:
    d, m, t, fb, a, e = run.dataset, run.model, run.train, run.free_bits, run.anneal, run.eval
    if not d.name.endswith(".npz"):
        _one_of(d.name, DATASETS, "dataset.name")
    _one_of(d.binarize, BINARIZE, "dataset.binarize")
    _validate_data_sizes(d)
    _validate_model(d, m)
    _check(
        len(m.hidden) > 0 and all(h > 0 for h in m.hidden),
        "model.hidden",
        f"needs one or more positive widths, got {list(m.hidden)}",
    )
    _check(m.latent_dim > 0, "model.latent_dim", f"must be > 0, got {m.latent_dim}")
    _check(
        _finite(m.mu_bn_gamma) and m.mu_bn_gamma >= 0,
        "model.mu_bn_gamma",
        f"must be a finite number >= 0 (0: no batch normalisation of μ), got {m.mu_bn_gamma}",
    )
    _one_of(m.activation, ACTIVATIONS, "model.activation")
    _one_of(m.output_bias, OUTPUT_BIASES, "model.output_bias")
    _check(t.epochs > 0, "train.epochs", f"must be > 0, got {t.epochs}")
    _check(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    _check(_finite(t.lr) and t.lr > 0, "train.lr", f"must be a finite number > 0, got {t.lr}")
    _check(
        _finite(t.adam_eps) and t.adam_eps > 0,
        "train.adam_eps",
        f"must be a finite number > 0, got {t.adam_eps}",
    )
    _one_of(t.lr_schedule, LR_SCHEDULES, "train.lr_schedule")
    _validate_plateau(d, t)
    _one_of(t.optimizer, OPTIMIZERS, "train.optimizer")
    _check(
        _finite(t.momentum) and 0 <= t.momentum < 1,
        "train.momentum",
        f"must lie in [0, 1), got {t.momentum}",
    )
    _check(
        _finite(t.grad_clip) and t.grad_clip >= 0,
        "train.grad_clip",
        f"must be a finite number >= 0 (0: no clipping), got {t.grad_clip}",
    )
    _check(t.seed >= 0, "train.seed", f"must be >= 0, got {t.seed}")
    _check(
        bool(DEVICE_PATTERN.match(t.device)),
        "train.device",
        f"{t.device!r} is not auto, cpu, cuda, cuda:N or a comma list of cuda:N",
    )
    _one_of(t.precision, PRECISIONS, "train.precision")
    _check(
        _finite(fb.lam) and fb.lam >= 0,
        "free_bits.lambda",
        f"must be a finite number >= 0 (nats), got {fb.lam}",
    )
    _one_of(fb.mode, FREE_BITS_MODES, "free_bits.mode")
    _check(
        fb.groups > 0 and m.latent_dim % fb.groups == 0,
        "free_bits.groups",
        f"must divide model.latent_dim={m.latent_dim}, got {fb.groups}",
    )
    _one_of(a.schedule, SCHEDULES, "anneal.schedule")
    _check(
        _finite(a.warmup_epochs) and 0 < a.warmup_epochs <= 1e6,
        "anneal.warmup_epochs",
        f"must lie in (0, 1e6], got {a.warmup_epochs}",
    )
    _check(
        a.warmup_steps is None or a.warmup_steps > 0,
        "anneal.warmup_steps",
        f"must be > 0, got {a.warmup_steps}",
    )
    _check(
        _finite(a.beta_max) and a.beta_max >= 0,
        "anneal.beta_max",
        f"must be a finite number >= 0, got {a.beta_max}",
    )
    _check(
        _finite(a.beta_start) and 0 <= a.beta_start <= a.beta_max,
        "anneal.beta_start",
        f"must lie in [0, beta_max={a.beta_max}], got {a.beta_start}",
    )
    _check(a.cycles > 0, "anneal.cycles", f"must be > 0, got {a.cycles}")
    _check(
        _finite(a.ratio) and 0 < a.ratio <= 1, "anneal.ratio", f"must lie in (0, 1], got {a.ratio}"
    )
    for name in ("au_threshold", "kl_threshold", "collapse_threshold"):
        value = getattr(e, name)
        _check(_finite(value) and value >= 0, f"eval.{name}", f"must be >= 0, got {value}")
    _check(e.iwae_samples >= 0, "eval.iwae_samples", f"must be >= 0, got {e.iwae_samples}")
    _check(e.iwae_every >= 0, "eval.iwae_every", f"must be >= 0, got {e.iwae_every}")
    _check(e.samples >= 0, "eval.samples", f"must be >= 0, got {e.samples}")
    _one_of(e.select, SELECT, "eval.select")
    _one_of(e.mi_estimator, MI_ESTIMATORS, "eval.mi_estimator")
    _one_of(e.probe_features, PROBE_FEATURES, "eval.probe_features")
    _check(e.mi_draws >= 1, "eval.mi_draws", f"must be >= 1, got {e.mi_draws}")
    _check(e.mi_batch >= 2, "eval.mi_batch", f"must be >= 2, got {e.mi_batch}")
    _check(
        _finite(e.temperature) and e.temperature > 0,
        "eval.temperature",
        f"must be > 0, got {e.temperature}",
    )
    _validate_remedies(run)
    _check(
        e.select == "last" or d.name == "text" or d.valid_size is not None,
        "eval.select",
        "best_valid needs a validation set: set dataset.valid_size (images hold one out of the "
        "training set; text reads valid.txt)",
    )
    _check(
        d.valid_size is None or d.name != "text",
        "dataset.valid_size",
        "text has its own validation file (dataset.valid or valid.txt)",
    )


def _validate_plateau(d: Any, t: Any) -> None:
    """LR decay on a validation plateau: its counts and factor, and a validation set to watch."""
    _one_of(t.lr_decay, LR_DECAYS, "train.lr_decay")
    _check(t.lr_patience >= 1, "train.lr_patience", f"must be >= 1, got {t.lr_patience}")
    _check(
        _finite(t.lr_factor) and 0 < t.lr_factor < 1,
        "train.lr_factor",
        f"must lie in (0, 1), got {t.lr_factor}",
    )
    _check(t.lr_max_decays >= 1, "train.lr_max_decays", f"must be >= 1, got {t.lr_max_decays}")
    _check(t.lr_decay_start >= 0, "train.lr_decay_start", f"must be >= 0, got {t.lr_decay_start}")
    _check(
        t.lr_decay == "none" or d.name == "text" or d.valid_size is not None,
        "train.lr_decay",
        "plateau watches a validation set: set dataset.valid_size (images hold one out of the "
        "training set; text reads valid.txt)",
    )


def _validate_remedies(run: RunLike) -> None:
    """Pretraining, warm starts and aggressive inference training."""
    p, t = run.pretrain, run.train
    _check(p.epochs >= 0, "pretrain.epochs", f"must be >= 0 (0: no pretraining), got {p.epochs}")
    _check(
        t.aggressive_steps > 0,
        "train.aggressive_steps",
        f"must be > 0, got {t.aggressive_steps}",
    )
    _check(
        not (p.epochs and run.init.from_),
        "init.from",
        "a run starts from its pretraining or from given parameters, not both "
        "(set pretrain.epochs: 0, or drop init.from)",
    )
    _check(
        run.init.from_ is None or bool(run.init.from_.strip()),
        "init.from",
        "must name a run folder, a model.pt or a checkpoint.pt",
    )


def _validate_data_sizes(d: Any) -> None:
    for name in ("train_size", "test_size", "valid_size", "max_length"):
        value = getattr(d, name)
        _check(value is None or value > 0, f"dataset.{name}", f"must be > 0, got {value}")
    _check(
        d.max_vocab is None or d.max_vocab > SPECIAL_TOKENS,
        "dataset.max_vocab",
        f"must be > {SPECIAL_TOKENS} (<pad> <s> </s> <unk> and at least one word), "
        f"got {d.max_vocab}",
    )
    _check(d.min_count >= 1, "dataset.min_count", f"must be >= 1, got {d.min_count}")
    _one_of(d.long_sentences, LONG_SENTENCES, "dataset.long_sentences")
    text_only = ("train", "valid", "test", "max_vocab", "max_length")
    for name in text_only:
        _check(
            getattr(d, name) is None or d.name == "text",
            f"dataset.{name}",
            f"is for text corpora (dataset.name: text), not {d.name}",
        )


def _validate_text_model(d: Any, m: Any) -> None:
    """Token sequences need a sequence model and the categorical likelihood, and vice versa."""
    text = d.name == "text"
    if text:
        _check(
            m.arch == "lstm" or m.module is not None,
            "model.arch",
            f"{m.arch} models images; text needs lstm (or a model.module for sequences)",
        )
        _check(
            m.likelihood == "categorical",
            "model.likelihood",
            f"{m.likelihood} models pixels; text needs categorical (a softmax over the vocabulary)",
        )
        _check(d.binarize == "none", "dataset.binarize", "text has no pixels to binarise")
    else:
        _check(
            m.arch != "lstm" or m.module is not None,
            "model.arch",
            f"lstm models token sequences; {d.name} holds images (use mlp or conv)",
        )
        _check(
            m.likelihood != "categorical",
            "model.likelihood",
            f"categorical models tokens; {d.name} holds images",
        )
    _check(m.embedding_dim > 0, "model.embedding_dim", f"must be > 0, got {m.embedding_dim}")
    for name in ("dropout", "word_dropout"):
        value = getattr(m, name)
        _check(
            _finite(value) and 0 <= value < 1, f"model.{name}", f"must lie in [0, 1), got {value}"
        )
    for i, where in enumerate(m.z_to):
        _one_of(where, Z_TO, f"model.z_to[{i}]")
    _check(len(set(m.z_to)) == len(m.z_to), "model.z_to", f"names a place twice: {list(m.z_to)}")


def _validate_model(d: Any, m: Any) -> None:
    """Architecture and likelihood fields, and the pairings of likelihood and data a run refuses
    (those that need the data's shape or bit depth are checked by `models.check_model`)."""
    _one_of(m.arch, ARCHS, "model.arch")
    _one_of(m.likelihood, LIKELIHOODS, "model.likelihood")
    _one_of(d.dequantize, DEQUANTIZE, "dataset.dequantize")
    _validate_text_model(d, m)
    _check(
        len(m.channels) > 0 and all(c > 0 for c in m.channels),
        "model.channels",
        f"needs one or more positive channel counts, got {list(m.channels)}",
    )
    _check(m.dense > 0, "model.dense", f"must be > 0, got {m.dense}")
    _check(m.latent_maps >= 0, "model.latent_maps", f"must be >= 0, got {m.latent_maps}")
    _check(m.mixtures > 0, "model.mixtures", f"must be > 0, got {m.mixtures}")
    _check(
        m.module is None or bool(MODULE_PATTERN.match(m.module)),
        "model.module",
        f"{m.module!r} must look like package.module:ClassName",
    )
    _check(
        m.latent_maps == 0 or (m.arch == "conv" and m.module is None),
        "model.latent_maps",
        "latent feature maps need model.arch: conv",
    )
    if m.likelihood == "gaussian":
        # A density on 8-bit data is a bound on the discrete likelihood only after uniform
        # dequantisation with the log 256 offset (Theis et al. 2016; as in Glow).
        _check(
            d.dequantize == "uniform",
            "model.likelihood",
            "gaussian needs dataset.dequantize: uniform (without it the loss on 8-bit data is "
            "unbounded below)",
        )
    else:
        _check(
            d.dequantize == "none",
            "dataset.dequantize",
            f"uniform dequantisation goes with the gaussian likelihood, not {m.likelihood}",
        )
    if m.likelihood != "bernoulli":
        _check(
            d.binarize == "none",
            "dataset.binarize",
            f"{d.binarize!r} makes binary data; the {m.likelihood} likelihood models 8-bit pixels",
        )
    _check(
        m.output_bias == "default"
        or (m.likelihood == "bernoulli" and m.arch == "mlp" and m.module is None),
        "model.output_bias",
        "data_mean sets per-pixel logits: only for the MLP with a Bernoulli decoder",
    )
