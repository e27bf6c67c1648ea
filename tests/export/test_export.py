"""Export to TensorBoard and MLflow, read back with the libraries' own readers: TensorBoard's event
reader and its HParams backend (what the dashboard shows), MLflow's client on a sqlite store.
Both libraries are the optional extras, which `make test` installs: these tests need them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import make_sweep, write_run
from typer.testing import CliRunner

from freebits_cli import load_runs
from freebits_cli.cli import app
from freebits_cli.export import Target, export, parse_targets
from freebits_cli.export.live import LiveExport
from freebits_cli.results.reader import read_csv

runner = CliRunner()
EPOCHS = 3


def numbers(lam: float, anneal: str, seed: int) -> dict[str, Any]:
    return {"elbo": -100 - lam - seed, "kl": 4 + lam, "active_units": 2 + 2 * lam, "iwae": 99 + lam}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A sweep of 4 done runs, one failed, one still training (2 of 3 epochs)."""
    root = tmp_path / "results"
    make_sweep(root / "demo", [0, 1], ["none", "linear"], [0], numbers, epochs=EPOCHS)
    write_run(root / "demo", 2, "none", 0, state="failed", epochs=EPOCHS)
    running = write_run(root / "demo", 2, "linear", 0, state="incomplete", epochs=EPOCHS)
    metrics = (running / "metrics.csv").read_text().splitlines(keepends=True)
    (running / "metrics.csv").write_text("".join(metrics[:-1]))  # epochs 1-2 of 3 so far
    return root


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store, made once: creating one runs MLflow's schema migrations
    (seconds), so each test copies this file instead."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "empty.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


def store(empty: Path, where: Path) -> str:
    """A fresh store at `where` (a copy of the empty one); its URI."""
    where.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty, where)
    return f"sqlite:///{where}"


def finish_running_run(root: Path) -> None:
    """The running run completes its last epoch and writes its summary."""
    scratch = root.parent / "scratch"
    src = write_run(scratch / "demo", 2, "linear", 0, epochs=EPOCHS)  # its files name sweep demo
    for name in ("metrics.csv", "kl_per_dim.csv", "summary.json", "samples.npz"):
        (root / "demo" / "runs" / src.name / name).write_bytes((src / name).read_bytes())
    shutil.rmtree(scratch)


# ---------------------------------------------------------------- TensorBoard


def tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def tb_images(run_dir: Path) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {t: acc.Images(t) for t in acc.Tags()["images"]}


def hparams_table(logdir: Path) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """What TensorBoard's HParams dashboard shows: its hparam and metric columns, and one row
    per session (hparams and metric values), asked of the plugin's own backend."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import (
        api_pb2,
        backend_context,
        get_experiment,
        list_session_groups,
    )

    mux = pem.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux, data_provider=provider)
    ctx, req_ctx = backend_context.Context(tb), context.RequestContext()
    request = api_pb2.GetExperimentRequest(include_metrics=True)
    experiment = get_experiment.Handler(req_ctx, ctx, "", request).run()
    hparams = [h.name for h in experiment.hparam_infos]
    metrics = [m.name.tag for m in experiment.metric_infos]
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=1000)
    request.allowed_statuses.extend(range(4))  # unknown, success, failure, running
    for name in hparams:
        request.col_params.add(hparam=name)
    for info in experiment.metric_infos:
        request.col_params.add(metric=info.name)
    groups = list_session_groups.Handler(req_ctx, ctx, "", request).run().session_groups
    rows = {}
    for group in groups:
        values = {
            k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in group.hparams.items()
        }
        rows[group.name] = values | {m.name.tag: m.value for m in group.metric_values}
    return hparams, metrics, rows


def test_tensorboard_scalars_kl_images_and_hparams(results: Path) -> None:
    out = export(results, [Target("tensorboard")], lambda m: None)
    logdir = results / "tensorboard"
    assert out.epochs["tensorboard"] == 4 * EPOCHS + (EPOCHS - 1) + (EPOCHS - 1)
    assert out.finished["tensorboard"] == 5  # 4 done + 1 failed; the running one has no session
    run = logdir / "demo" / "lam1-linear-s0"
    scalars = tb_scalars(run)
    metrics = read_csv(
        results / "demo" / "runs" / "lam1-linear-s0" / "metrics.csv", ["epoch"], print
    )
    for column in ("beta", "train_loss", "test_elbo", "test_kl", "active_units", "seconds"):
        assert scalars[column] == [
            (int(e), pytest.approx(v))
            for e, v in zip(metrics["epoch"], metrics[column], strict=True)
        ]
    assert scalars["test_iwae_nll"] == [(EPOCHS, 100)]  # measured at the last epoch only
    assert {f"kl_per_dim/{d}" for d in range(4)} <= set(scalars)
    assert [v for _, v in scalars["kl_per_dim/0"]] == pytest.approx(
        [5 / 4 * 3, 5 / 4 * 2, 5 / 4]
    )  # kl 5 over 4 units
    assert scalars["final/test_elbo"] == [(EPOCHS, -101)]
    images = tb_images(run)
    assert set(images) == {"samples/reconstructions", "samples/prior_samples"}
    assert (
        images["samples/reconstructions"][0].height,
        images["samples/reconstructions"][0].width,
    ) == (9, 29)

    hparams, metric_cols, rows = hparams_table(logdir)
    assert set(hparams) == {"lambda", "free_bits_mode", "anneal", "seed"}
    assert {"final/test_elbo", "final/active_units", "final/test_iwae_nll"} <= set(metric_cols)
    assert len(rows) == 5 and "demo/lam2-linear-s0" not in rows
    row = rows["demo/lam1-linear-s0"]
    assert (row["lambda"], row["anneal"], row["free_bits_mode"], row["seed"]) == (
        1,
        "linear",
        "batch",
        0,
    )
    assert (row["final/test_elbo"], row["final/active_units"], row["final/test_kl"]) == (-101, 4, 5)


def test_tensorboard_export_is_idempotent_and_adds_what_is_new(results: Path) -> None:
    export(results, [Target("tensorboard")], lambda m: None)
    again = export(results, [Target("tensorboard")], lambda m: None)
    assert (again.epochs["tensorboard"], again.finished["tensorboard"]) == (0, 0)
    running = results / "tensorboard" / "demo" / "lam2-linear-s0"
    assert [s for s, _ in tb_scalars(running)["test_elbo"]] == [1, 2]
    finish_running_run(results)
    later = export(results, [Target("tensorboard")], lambda m: None)
    assert (later.epochs["tensorboard"], later.finished["tensorboard"]) == (1, 1)
    scalars = tb_scalars(running)
    assert [s for s, _ in scalars["test_elbo"]] == [1, 2, 3]  # each epoch once
    assert scalars["final/test_elbo"] == [(EPOCHS, -100)]  # write_run's default
    assert "demo/lam2-linear-s0" in hparams_table(results / "tensorboard")[2]


# ---------------------------------------------------------------- MLflow


def mlflow_runs(uri: str, sweep: str = "demo") -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(sweep)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return {r.data.tags["freebits.run_id"]: r for r in runs}


def test_mlflow_runs_params_metrics_artifacts_tags(
    results: Path, tmp_path: Path, empty_store: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = store(empty_store, tmp_path / "store" / "mlflow.db")
    out = export(results, [Target("mlflow", uri)], lambda m: None)
    assert out.finished["mlflow"] == 5
    runs = mlflow_runs(uri)
    assert len(runs) == 6
    done = runs["lam1-linear-s0"]
    assert done.info.status == "FINISHED" and done.info.run_name == "lam1-linear-s0"
    assert runs["lam2-none-s0"].info.status == "FAILED"
    assert runs["lam2-linear-s0"].info.status == "RUNNING"
    assert done.data.tags["freebits.state"] == "done"
    assert runs["lam2-linear-s0"].data.tags["freebits.state"] == "incomplete"
    params = done.data.params
    assert params["free_bits.lambda"] == "1" and params["anneal.schedule"] == "linear"
    assert params["model.hidden"] == "[64]" and params["train.batch_size"] == "32"
    assert done.data.metrics["test_elbo"] == -101  # the latest value: the last epoch
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(done.info.run_id, "test_elbo")
    assert sorted((m.step, m.value) for m in history) == [(1, -103), (2, -102), (3, -101)]
    assert len(client.get_metric_history(done.info.run_id, "kl_per_dim/3")) == EPOCHS
    files = {f.path for f in client.list_artifacts(done.info.run_id)}
    assert files == {"config.json", "summary.json", "samples"}
    samples = {f.path for f in client.list_artifacts(done.info.run_id, "samples")}
    assert samples == {"samples/reconstructions.png", "samples/prior_samples.png"}
    failed = {f.path for f in client.list_artifacts(runs["lam2-none-s0"].info.run_id)}
    assert failed == {"config.json", "failed.json"}
    # Artifacts sit beside the sqlite file, not in the current folder.
    assert (tmp_path / "store" / "mlartifacts" / "demo").is_dir()


def test_mlflow_export_is_idempotent_and_adds_what_is_new(
    results: Path, tmp_path: Path, empty_store: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri = store(empty_store, tmp_path / "mlflow.db")
    export(results, [Target("mlflow", uri)], lambda m: None)
    again = export(results, [Target("mlflow", uri)], lambda m: None)
    assert (again.epochs["mlflow"], again.finished["mlflow"]) == (0, 0)
    finish_running_run(results)
    later = export(results, [Target("mlflow", uri)], lambda m: None)
    assert (later.epochs["mlflow"], later.finished["mlflow"]) == (1, 1)
    runs = mlflow_runs(uri)
    assert len(runs) == 6
    run = runs["lam2-linear-s0"]
    assert run.info.status == "FINISHED" and run.data.tags["freebits.state"] == "done"
    history = MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "test_elbo")
    assert sorted(m.step for m in history) == [1, 2, 3]  # each epoch once


# ---------------------------------------------------------------- command line and --log


def test_export_command_defaults_under_the_results_folder(results: Path, empty_store: Path) -> None:
    store(empty_store, results / "mlflow.db")  # the default place, made ahead only for speed
    result = runner.invoke(app, ["export", str(results), "--to", "tensorboard", "--to", "mlflow"])
    assert result.exit_code == 0, result.output
    assert "6 run(s) read; wrote 16 new run-epoch(s) and 5 finished run(s)" in result.output
    assert (results / "tensorboard" / "demo" / "lam0-none-s0").is_dir()
    assert len(mlflow_runs(f"sqlite:///{results / 'mlflow.db'}")) == 6
    assert len(load_runs(results)) == 6  # the exported folders are not taken for runs


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--to", "wandb"], "unknown target 'wandb'"),
        ([], "no target given"),
        (["--to", "mlflow="], "mlflow= needs a URI"),
        (["--to", "mlflow", "--to", "mlflow=x"], "mlflow is given twice"),
    ],
)
def test_bad_targets_are_one_line_and_exit_2(results: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["export", str(results), *args])
    assert result.exit_code == 2
    assert needle in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_extra_names_it_and_exits_2(results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    result = runner.invoke(app, ["export", str(results), "--to", "mlflow"])
    assert result.exit_code == 2
    assert "pip install 'freebits[mlflow]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    sweep = runner.invoke(app, ["sweep", "--log", "tensorboard,mlflow", "--out", str(results)])
    assert sweep.exit_code == 2 and "freebits[mlflow]" in sweep.output
    assert not (results / "default").exists()  # refused before anything was written


def test_a_failing_logger_warns_and_never_raises(results: Path) -> None:
    said: list[str] = []
    blocker = results / "blocker"
    blocker.write_text("a file where the log folder should be")
    live = LiveExport(results, "demo", [Target("tensorboard", str(blocker / "tb"))], said.append)
    for _ in range(3):
        live.epoch_done()
    live.close()
    assert len(said) == 1 and "--log tensorboard: export failed" in said[0]


def test_sweep_log_exports_each_epoch_while_training(
    tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store(empty_store, tmp_path / "m.db")
    signals: list[int] = []  # the trainer's calls: after each committed epoch, and the pack
    real = LiveExport.epoch_done
    monkeypatch.setattr(LiveExport, "epoch_done", lambda self: (signals.append(1), real(self)))
    quick = ["--epochs", "2", "--set", "model.hidden=[16]", "--latent-dim", "2"]
    quick += ["--device", "cpu", "--set", "eval.iwae_samples=2", "--set", "eval.mi=false"]
    args = ["sweep", "--lambdas", "0,1", "--out", str(tmp_path), *quick]
    result = runner.invoke(app, [*args, "--log", f"tensorboard,mlflow={uri}"])
    assert result.exit_code == 0, result.output
    assert len(signals) == 2 + 1  # epochs 1 and 2 of the one pack, then the pack's end
    runs = sorted((tmp_path / "default" / "runs").iterdir())
    for run in runs:
        scalars = tb_scalars(tmp_path / "tensorboard" / "default" / run.name)
        assert [s for s, _ in scalars["test_elbo"]] == [1, 2]
        summary = json.loads((run / "summary.json").read_text())
        assert scalars["final/test_elbo"] == [(2, pytest.approx(summary["test_elbo"]))]
    assert {r.info.status for r in mlflow_runs(uri, "default").values()} == {"FINISHED"}
    with (runs[0] / "metrics.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_parse_targets_keeps_uris_whole() -> None:
    targets = parse_targets(["tensorboard=runs/tb", "mlflow=http://host:5000/?a=b"])
    assert targets == [Target("tensorboard", "runs/tb"), Target("mlflow", "http://host:5000/?a=b")]
