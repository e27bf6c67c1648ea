"""Every name the results use, written once: the files of a sweep and of a run folder, the
columns of metrics.csv, kl_per_dim.csv, summary.json and summary.csv, and which spec fields
shape a run, which only place it, and which the report names itself.

Whatever writes or reads results (storage, records, the engine's scores, the reader behind the
report and the Python API, export, status) takes its names from here, so adding a metric means
adding it to `METRICS` below and computing it. This module imports nothing of the package: the
spec layer at the bottom reads the field lists too.
"""

from __future__ import annotations

from dataclasses import dataclass

# Files: RESULTS/<sweep>/{spec.yaml, runs/<run-id>/...} (DESIGN.md, "Results layout").
SPEC_FILE = "spec.yaml"
RUNS_DIR = "runs"
CONFIG = "config.json"
METRICS_CSV = "metrics.csv"
KL_PER_DIM = "kl_per_dim.csv"
#: Written last, atomically: its presence marks a complete run.
SUMMARY = "summary.json"
FAILED = "failed.json"
CHECKPOINT = "checkpoint.pt"
#: The checkpoint of the epoch being written; promoted to CHECKPOINT once the whole pack has it.
CHECKPOINT_NEXT = "checkpoint.next.pt"
#: A complete run's final parameters (what `init.from` and pretrained runs start from).
MODEL_FILE = "model.pt"
#: RESULTS/<sweep>/pretrain/<id>/: the pretrainings (Li et al. 2019) runs of the sweep start
#: from, each a run folder of its own, shared by every run with the same pretraining.
PRETRAIN_DIR = "pretrain"
#: Image runs: originals, reconstructions and prior samples.
SAMPLES = "samples.npz"
#: Text runs: their sentences (test, reconstructed, from the prior, along a homotopy) and vocabulary.
SENTENCES, VOCAB = "samples.json", "vocab.json"
#: A folder below runs/ holding one of these is a run folder.
RUN_MARKERS = (CONFIG, SUMMARY, FAILED)
#: What `freebits export` attaches to each run as artifacts.
ARTIFACTS = (CONFIG, SUMMARY, FAILED)
#: Slurm submissions: the job ids of a sweep, and the jobs' logs.
JOBS_FILE, LOG_DIR = "jobs.json", "logs"
#: The report's tables and page.
SUMMARY_CSV, BY_SETTING_CSV = "summary.csv", "by_setting.csv"
STRATEGIES_CSV, PARETO_CSV, INDEX_HTML = "strategies.csv", "pareto.csv", "index.html"
#: The remedies compared (one row per remedy at its best setting; report/remedies.py).
REMEDIES_CSV = "remedies.csv"


@dataclass(frozen=True)
class Metric:
    """One metric column of metrics.csv (one value per epoch)."""

    name: str
    #: Copied from the last epoch's row into summary.json and summary.csv.
    final: bool = True
    #: Computed only on some epochs (the IWAE bound, MI): a reader never takes a stale value.
    sparse: bool = False
    #: Exported to TensorBoard's HParams and MLflow as a final metric.
    export: bool = True
    #: Aggregated over seeds in the report's by-setting table (mean ± interval).
    report: bool = True


#: The columns that say which run a row belongs to, in every output.
LABELS = ("lambda", "free_bits_mode", "anneal", "seed", "binarize")
#: Training terms of each epoch (per example, nats), averaged over its steps.
TRAIN_TERMS = ("beta", "train_loss", "train_recon", "train_kl")

METRICS = (
    Metric("test_elbo"),
    Metric("test_recon"),
    Metric("test_kl"),
    Metric("active_units"),
    Metric("active_units_kl"),
    Metric("binding_share", export=False, report=False),
    #: The learning rate the epoch trained with (a schedule's, times a plateau decay's factors).
    Metric("lr", final=False, export=False, report=False),
    Metric("test_iwae_nll", sparse=True),
    #: I(x;z), the mean over `eval.mi_draws` independent draws of the estimator (encodings reused).
    Metric("test_mi", sparse=True),
    #: The 95% interval of that mean (Student t over the draws).
    Metric("test_mi_lo", sparse=True, export=False, report=False),
    Metric("test_mi_hi", sparse=True, export=False, report=False),
    #: KL(q(z)‖p(z)) of the aggregate posterior, from the MI's samples: the rate that carries no
    #: information about x (Hoffman & Johnson 2016); test_mi + test_marginal_kl ≈ test_kl.
    Metric("test_marginal_kl", sparse=True),
    #: Test accuracy of a logistic regression on the posterior means (where the data has labels).
    Metric("test_probe_accuracy", sparse=True),
    Metric("test_bits_per_dim"),
    Metric("test_iwae_bits_per_dim", sparse=True),
    Metric("test_ppl", sparse=True, export=False),
    Metric("test_elbo_ppl", export=False),
    Metric("valid_elbo", final=False, export=False, report=False),
    # Aggressive inference training (He et al. 2019): encoder-only steps taken in the epoch, and
    # the held-out MI its stop rule compared (empty once the phase is over, or never on).
    Metric("aggressive_steps", final=False, export=False, report=False),
    Metric("aggressive_mi", final=False, export=False, report=False),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
#: Final metrics copied from the last epoch's row into summary.json.
FINAL_METRICS = tuple(m.name for m in METRICS if m.final)
SPARSE_METRICS = tuple(m.name for m in METRICS if m.sparse)
EXPORTED_METRICS = (*(m.name for m in METRICS if m.export), "active_share")

METRICS_COLUMNS = ("run_id", *LABELS, "epoch", "step", *TRAIN_TERMS, *METRIC_NAMES, "seconds")
#: kl = kl_spread + kl_rest per unit: ½ Var_x μ_j (the part that varies with x) and the offset
#: and variance terms ½ (E_x μ_j)² + ½ E_x[σ_j² − 1 − log σ_j²] (the same for every x).
KL_COLUMNS = ("epoch", "dim", "kl", "kl_spread", "kl_rest")

#: summary.json's and summary.csv's wall-clock time of the whole pack a run trained in.
PACK_SECONDS = "pack_seconds"

#: summary.json's keys (an unknown key is refused when it is written).
SUMMARY_KEYS = (
    "run_id",
    "sweep",
    *LABELS,
    "latent_dim",
    "epochs",
    "dataset",
    *FINAL_METRICS,
    "iwae_samples",
    #: train.lr_decay: plateau — how many times the run's learning rate was decayed.
    "lr_decays",
    "collapse_epoch",
    "kl_per_dim",
    #: The run's share of its pack's wall-clock time (each epoch's time / the pack's members).
    "seconds",
    #: The whole pack's wall-clock time over the epochs this run trained in it.
    PACK_SECONDS,
    "device",
    "setting",
    "best_valid",
    #: `collapsed` | `informative` | `kl_without_information` (results/information.py).
    "information",
)

#: summary.csv (the report's and `load_runs`' table, one row per run): these columns, then one
#: per swept field other than the labels (dotted paths, e.g. `model.latent_dim`).
RUN_TABLE_COLUMNS = (
    "sweep",
    "run_id",
    "state",
    "lambda",
    "free_bits_mode",
    "anneal",
    "seed",
    "strategy",
    "latent_dim",
    "epochs",
    "epochs_done",
    "dataset",
    "binarize",
    "likelihood",
    "cross_entropy",
    *FINAL_METRICS,
    "active_share",
    "information",
    "iwae_samples",
    "seconds",
    PACK_SECONDS,
    "device",
    "failed_reason",
    "failed_epoch",
    "summary_damaged",
    "path",
)
#: What the report aggregates over seeds, in the order its tables show them.
REPORT_METRICS = (
    "test_elbo",
    "test_recon",
    "test_kl",
    "active_units",
    "active_share",
    "active_units_kl",
    "test_iwae_nll",
    "test_mi",
    "test_marginal_kl",
    "test_probe_accuracy",
    "seconds",
    "test_bits_per_dim",
    "test_iwae_bits_per_dim",
    "test_ppl",
    "test_elbo_ppl",
)
#: Columns read as text (every other known column is a number).
TEXT_COLUMNS = ("run_id", "free_bits_mode", "anneal", "binarize", "likelihood", "information")

# Spec fields, by what they do to a run.
#: Fields that say where a run trains, where its data lives or how its step is launched, not what
#: it computes: recorded in config.json but kept out of the run id, so moving a sweep to another
#: GPU or data folder (or from `cuda` to `auto`, or graphs off) does not retrain it; they may
#: change under one sweep name, and the report never tells settings apart by them.
PLACEMENT_FIELDS = ("train.device", "dataset.data_dir", "train.cuda_graph")
#: ... except `dataset.data_dir` of these data sets, whose folder *is* the data (a text corpus):
#: there it is part of the identity, and two corpora are two settings.
DATA_IS_FOLDER = ("text",)
#: Sections about how jobs are submitted, wherever they live: never part of a run.
SUBMISSION_SECTIONS = ("slurm.",)
#: The fields the report has its own columns for (the labels), by their dotted path.
LABEL_FIELDS = {
    "free_bits.lambda": "lambda",
    "free_bits.mode": "free_bits_mode",
    "anneal.schedule": "anneal",
    "train.seed": "seed",
}
#: Pooled over, never a setting: runs that differ only here are seeds of one setting.
SEED_FIELD = "train.seed"


def placement_fields(dataset_name: str | None) -> tuple[str, ...]:
    """The placement fields of a run on `dataset_name` (see PLACEMENT_FIELDS, DATA_IS_FOLDER)."""
    if dataset_name in DATA_IS_FOLDER:
        return tuple(f for f in PLACEMENT_FIELDS if f != "dataset.data_dir")
    return PLACEMENT_FIELDS
