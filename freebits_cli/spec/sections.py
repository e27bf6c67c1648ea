"""The sections of a spec (dataset, model, train, free_bits, anneal, eval, pretrain, init, slurm):
frozen dataclasses whose fields carry their defaults and a docstring-style comment each, which
docs/spec.md is generated from. A run (`config.RunConfig`) is one of each but `slurm`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freebits_cli.errors import SpecError
from freebits_cli.spec.values import Kwargs


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "digits"
    """`digits` (bundled), `mnist`, `fashion-mnist`, `cifar10`, a path to a `.npz` with
    x_train/x_test, or `text` (a sentence corpus: `data_dir` or `train`/`valid`/`test`)."""
    data_dir: str | None = None
    """Folder holding the raw IDX files (gzipped or not), CIFAR-10's batches, or a text corpus's
    train.txt/valid.txt/test.txt; None: default places, then download (images)."""
    binarize: str = "none"
    """`none` (grayscale targets), `dynamic` (re-sampled every batch), `static` (sampled once)."""
    dequantize: str = "none"
    """`none`, or `uniform`: 8-bit pixels k become (k + u)/256, u ~ U[0, 1), fresh every batch
    (the test set once); required by, and only allowed with, the `gaussian` likelihood."""
    train_size: int | None = None
    """Train on a seeded random subset of this many training examples (the same for every run);
    None: all of them."""
    test_size: int | None = None
    """Evaluate on a seeded random subset of this many test examples; None: all of them."""
    valid_size: int | None = None
    """Images: hold this many training examples out as a validation set (seeded, the same for
    every run) for `eval.select: best_valid`; text has its valid.txt. None: no hold-out."""
    train: str | None = None
    """text: the training file (one whitespace-tokenised sentence per line); None: `data_dir`'s
    train.txt or ptb.train.txt."""
    valid: str | None = None
    """text: the validation file; None: `data_dir`'s valid.txt or ptb.valid.txt."""
    test: str | None = None
    """text: the test file; None: `data_dir`'s test.txt or ptb.test.txt."""
    strip_label: bool = False
    """text: drop each line's `label<TAB>` prefix (the Yelp and Yahoo files of He et al. 2019)."""
    max_vocab: int | None = None
    """text: at most this many tokens in the vocabulary, `<pad> <s> </s> <unk>` included, the most
    frequent training tokens kept; None: every training token (as the papers do)."""
    min_count: int = 1
    """text: tokens seen fewer times in the training file become `<unk>`."""
    max_length: int | None = None
    """text: longest sentence in words (`</s>` not counted); longer ones are dropped or cut
    (`long_sentences`), and loading says how many. None: keep every sentence."""
    long_sentences: str = "drop"
    """text: `drop` sentences longer than `max_length`, or `cut` them to `max_length` words."""


@dataclass(frozen=True)
class ModelSpec:
    arch: str = "mlp"
    """`mlp` (dense layers `hidden`, data flattened), `conv` (conv layers `channels`, kernel 4,
    stride 2, a dense layer of width `dense`; images keep their C×H×W shape) or `lstm` (text:
    LSTM encoder and autoregressive LSTM decoder). On text the default `mlp` stands for `lstm`.
    Ignored when `module` is set."""
    hidden: tuple[int, ...] = (256, 128)
    """Hidden layer widths of the MLP encoder (the decoder mirrors them); lstm: one LSTM layer of
    H units per entry, in the encoder and in the decoder. On text the default stands for [256]
    (Li et al. 2019's PTB size; He et al. 2019 use [1024])."""
    embedding_dim: int = 256
    """lstm: width of the word embeddings (encoder and decoder each have their own)."""
    dropout: float = 0.0
    """lstm: dropout on the decoder's input embeddings and on its LSTM outputs (He et al. 2019:
    0.5)."""
    word_dropout: float = 0.0
    """lstm: share of decoder input words replaced by `<unk>` while training (Bowman et al. 2016;
    Texar's PTB VAE keeps 0.5 of them)."""
    z_to: tuple[str, ...] = ("input", "state")
    """lstm: where z enters the decoder: `input` (concatenated to every input embedding), `state`
    (initial cell c₀ = W z, h₀ = tanh c₀), both (He et al. 2019), or neither ([]: a language model
    that ignores z, the baseline of the papers)."""
    channels: tuple[int, ...] = (32, 32, 64, 64)
    """Output channels of the conv encoder's layers (each halves H and W); the decoder mirrors
    them with transposed convolutions (disentanglement_lib's 32-32-64-64)."""
    dense: int = 256
    """Width of the conv model's dense layer between the feature maps and μ, log σ²."""
    latent_maps: int = 0
    """conv only: 0 for a latent vector of `latent_dim` units from the dense layer; c > 0 for c
    latent feature maps on the encoder's last H×W grid (as IAF), so latent_dim = c·H·W."""
    latent_dim: int = 16
    """Number of latent dimensions D."""
    mu_bn_gamma: float = 0.0
    """BN-VAE (Zhu et al. 2020): batch-normalise each posterior mean μ_j with this fixed scale γ
    and a learned shift, which keeps the batch-mean KL above ≈ D·γ²/2 (running statistics at
    evaluation, as BatchNorm does); 0: off. Zhu et al. use γ of 0.3 to 1.0."""
    activation: str = "relu"
    """Hidden-layer non-linearity."""
    output_bias: str = "default"
    """Decoder output bias at init: `default` (like nn.Linear) or `data_mean` (the logit of each
    pixel's training-set mean, as Burda et al. 2015; MLP with a Bernoulli decoder only)."""
    likelihood: str = "bernoulli"
    """p(x|z): `bernoulli` (logits), `logistic` (discretized logistic, 8-bit images),
    `logistic_mixture` (`mixtures` components), `gaussian` (with `dataset.dequantize: uniform`),
    `categorical` (text: a softmax over the vocabulary per token; on text the default `bernoulli`
    stands for it)."""
    mixtures: int = 5
    """Components per pixel of the `logistic_mixture` likelihood."""
    module: str | None = None
    """A user's own model class, `package.module:Class` (see README); replaces `arch`."""
    kwargs: Kwargs = field(default_factory=lambda: Kwargs())
    """Keyword arguments for the `module` class's constructor."""


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 60
    """Passes over the training set."""
    batch_size: int = 128
    """Examples per optimisation step."""
    lr: float = 1e-3
    """Learning rate."""
    optimizer: str = "adam"
    """`adam` (fused; Kingma & Ba 2015) or `sgd` (with `momentum`; He et al. 2019: lr 1.0)."""
    momentum: float = 0.0
    """Momentum of `sgd`."""
    grad_clip: float = 0.0
    """Clip each run's own gradient to this L2 norm before each update (He et al. 2019: 5.0);
    0: no clipping. Per run, never over the pack."""
    adam_eps: float = 1e-8
    """Adam's ε (Burda et al. 2015 used 1e-4)."""
    lr_schedule: str = "constant"
    """`constant`, `cosine` (to 0 over training) or `burda` (lr·10^(-i/7) for 3^i epochs)."""
    lr_decay: str = "none"
    """`none`, or `plateau`: after `lr_patience` epochs in a row whose validation ELBO is below
    the last one that was not, multiply the run's learning rate by `lr_factor`, reload its best
    parameters (by validation ELBO) and start its optimizer afresh; the run ends after
    `lr_max_decays` decays (He et al. 2019, Li et al. 2019). Per run, also inside a pack. Needs
    a validation set (text, or dataset.valid_size)."""
    lr_patience: int = 2
    """Epochs without improvement before a plateau decay (their `decay_epoch`)."""
    lr_factor: float = 0.5
    """What a plateau decay multiplies the learning rate by (their `lr_decay`)."""
    lr_max_decays: int = 5
    """The run stops after this many plateau decays (their `max_decay`)."""
    lr_decay_start: int = 0
    """No plateau decay within the first this many epochs (He et al. 2019's `epoch >= 15`: 15)."""
    seed: int = 0
    """Seeds initialisation, data order, reparameterisation noise and binarisation."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:N`, or a comma list of CUDA devices to spread packs over."""
    precision: str = "fp32"
    """`fp32`; `tf32` to allow TensorFloat-32 matmuls on Ampere+ GPUs; `bf16` for bfloat16 autocast
    of the forward pass (GPU tensor cores, CPUs with AMX); weights and Adam stay float32."""
    cuda_graph: bool = True
    """On CUDA, capture the training step in a CUDA graph and replay it (no effect on CPU)."""
    aggressive: bool = False
    """Aggressive inference-network training (He et al. 2019, `text.py --aggressive 1`): before
    each full update the encoder alone takes up to `aggressive_steps` steps on fresh batches
    (stopped once its loss over 15 steps stops falling), and the full update moves only the
    decoder; the phase ends for a run after the first epoch whose held-out MI is lower than the
    epoch before (validation set, else the test set). Trains eagerly, member by member."""
    aggressive_steps: int = 100
    """Most encoder-only steps before each decoder update in the aggressive phase (He et al.'s
    loop `while sub_iter < 100` takes at most 99)."""


@dataclass(frozen=True)
class FreeBitsSpec:
    lam: float = 0.0
    """Free-bits threshold λ in nats (YAML key `lambda`); 0 is the plain VAE."""
    mode: str = "batch"
    """`batch` (Kingma et al. 2016), `example` (Li et al. 2019's fb 2, with λ = their target/D),
    `total` (their fb 3, λ·D), `group`, or `example_total` (their fb 1: each example's total KL
    against λ·D)."""
    groups: int = 1
    """Number of equal latent groups for `group` mode."""


@dataclass(frozen=True)
class AnnealSpec:
    schedule: str = "none"
    """β(t) schedule for the KL term: `none` (β ≡ 1), `constant` (β ≡ `beta_max`: a β-VAE),
    `linear`, `sigmoid`, `cyclical`."""
    warmup_epochs: float = 10.0
    """Length of the linear/sigmoid warm-up in epochs."""
    warmup_steps: int | None = None
    """Warm-up length in optimisation steps; overrides warmup_epochs when set."""
    beta_start: float = 0.0
    """β at step 0 of a linear/sigmoid warm-up (He et al. 2019 start at 0.1)."""
    beta_max: float = 1.0
    """β at the end of the warm-up, the top of each cycle, and throughout `constant`; `none`
    ignores it (β ≡ 1)."""
    cycles: int = 4
    """Number of cycles M of the cyclical schedule (Fu et al. 2019)."""
    ratio: float = 0.5
    """Share R of each cycle spent ramping β up (Fu et al. 2019)."""


@dataclass(frozen=True)
class EvalSpec:
    au_threshold: float = 0.01
    """δ of the active-unit rule Cov_x(E_q[z_j|x]) > δ (Burda et al. 2015)."""
    kl_threshold: float = 0.01
    """A unit is active by the KL rule when its mean KL exceeds this (nats)."""
    collapse_threshold: float = 0.01
    """ε: a unit has collapsed from the first epoch after which its KL stays below ε (nats)."""
    iwae_samples: int = 100
    """k of the importance-weighted bound at the end of a run (0: skip)."""
    iwae_every: int = 0
    """Also compute the IWAE bound every N epochs (0: only at the end)."""
    mi: bool = True
    """Estimate the mutual information I(x;z) and the marginal KL KL(q(z)‖p(z)) at the end of a
    run (Hoffman & Johnson 2016: the two add up to the mean KL)."""
    mi_draws: int = 10
    """Independent draws of the MI estimate (one z per test example each, the encodings reused):
    `test_mi` is their mean, `test_mi_lo`/`test_mi_hi` its 95% interval (from each example's
    spread over the draws; Monte Carlo noise only). At most this many: a large test set gets
    fewer, as many as cost 2 × 10,000² sample-component pairs, and never fewer than 2 (10,000
    test images: 2; 359 digits: 10). 1: a single draw, no interval."""
    mi_estimator: str = "dataset"
    """The aggregate posterior q(z) of the MI estimate: `dataset` mixes every test example (as Li
    et al. 2019's code; capped at log N); `batch` mixes each block of `eval.mi_batch`
    consecutive test examples and averages the blocks weighted by size (as He et al. 2019's
    code; capped at log B, and lower), to compare with their tables like for like."""
    mi_batch: int = 50
    """Examples per block of `mi_estimator: batch` (He et al. 2019's code: 50 images, 32
    sentences)."""
    probe: bool = True
    """Where the data has labels (digits, MNIST, Fashion-MNIST, CIFAR-10, `.npz` with `y_train`
    and `y_test`, text lines with a `label<TAB>` prefix and `dataset.strip_label`): the test
    accuracy of a logistic regression on the posterior means, fitted on the training set's
    (`test_probe_accuracy`; Li et al. 2019 evaluate z by classification)."""
    probe_features: str = "mean"
    """What the probe reads: `mean`, the posterior means E_q[z|x] (Li et al. 2019), standardised —
    which finds the class even in units whose means vary by a hair under a posterior noise of
    σ ≈ 1 that leaves the decoder nothing (a collapsed digits run scores ~0.88); or `sample`, one
    z ~ q(z|x) per example from the run's own stream, standardised: what the decoder is given,
    so near chance where z carries no information."""
    samples: int = 8
    """Test reconstructions and prior samples saved per run for the report."""
    temperature: float = 1.0
    """Text: the softmax temperature of the sampled decodes saved beside the greedy ones
    (reconstructions and prior samples, drawn from the run's own stream)."""
    select: str = "last"
    """`last`: report the last epoch; `best_valid`: also keep each run's parameters at its best
    validation ELBO and report their test numbers beside the last epoch's (summary.json
    `best_valid`), as He et al. 2019 do. Needs a validation set (text, or dataset.valid_size)."""


@dataclass(frozen=True)
class PretrainSpec:
    epochs: int = 0
    """Encoder pretraining (Li et al. 2019): first train the same model as an autoencoder (β = 0,
    no free bits) for this many epochs, then start the run from it. 0: no pretraining. Runs that
    share everything but the fields that act after it (free bits, annealing, evaluation,
    `reset_decoder`, the run's epochs) share one pretraining, trained once in the sweep folder's
    `pretrain/`."""
    reset_decoder: bool = True
    """After pretraining, re-initialise the decoder from the run's own stream and keep only the
    pretrained encoder (Li et al.'s `--reset_dec`); false: start from the whole autoencoder."""


@dataclass(frozen=True)
class InitSpec:
    from_: str | None = None
    """Start from given parameters (YAML key `from`): a finished run's folder (its `model.pt`),
    a `model.pt`, or a run's `checkpoint.pt`; the shapes must match this run's model. None: a
    fresh initialisation. The optimizer starts afresh."""


@dataclass(frozen=True)
class SlurmSpec:
    """Where and how `--executor slurm` submits the sweep (mapped onto submitit's parameters).

    Not part of any run's identity: where a run trains does not change its numbers."""

    partition: str | None = None
    """Slurm partition (`--partition`); None: the cluster's default."""
    account: str | None = None
    """Account charged for the jobs (`--account`)."""
    qos: str | None = None
    """Quality of service (`--qos`)."""
    constraint: str | None = None
    """Node features required (`--constraint`, e.g. `a100`)."""
    time_min: float = 60.0
    """Time limit of each array task in minutes; a task that hits it is checkpointed and
    requeued (up to 3 times), and its runs resume from their last complete epoch."""
    gpus_per_node: int = 1
    """GPUs per array task (one pack trains on one GPU); 0 for CPU-only partitions."""
    cpus_per_task: int = 4
    """CPU cores per array task."""
    mem_gb: float | None = None
    """Host memory per task in GB; None: the cluster's default."""
    array_parallelism: int = 256
    """At most this many array tasks run at once (`--array=0-N%P`)."""
    max_array_size: int = 1000
    """Largest array the cluster accepts (its MaxArraySize minus one); bigger sweeps are split
    into several arrays."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which Slurm sends USR2, so the task can requeue itself."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each task: module loads, `source .venv/bin/activate`, ... The
    environment must exist on the compute nodes."""
    additional: dict[str, Any] = field(default_factory=dict)
    """Extra sbatch options as a mapping, e.g. {mail-type: END} -> `#SBATCH --mail-type=END`."""


def _validate_slurm(slurm: SlurmSpec) -> None:
    positive = ("time_min", "array_parallelism", "max_array_size", "cpus_per_task")
    for name in positive:
        value = getattr(slurm, name)
        if not value > 0 or value == float("inf"):
            raise SpecError(f"slurm.{name}", f"must be a finite number > 0, got {value}")
    for name in ("gpus_per_node", "signal_delay_s"):
        if getattr(slurm, name) < 0:
            raise SpecError(f"slurm.{name}", f"must be >= 0, got {getattr(slurm, name)}")
    if slurm.mem_gb is not None and not 0 < slurm.mem_gb < float("inf"):
        raise SpecError("slurm.mem_gb", f"must be a number > 0, got {slurm.mem_gb}")
