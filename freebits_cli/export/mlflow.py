"""MLflow: one experiment per sweep, one MLflow run per freebits run, through MLflow's client.

params = the run's whole config, flattened (`model.hidden`, `train.lr`, ...); metrics = every
metrics.csv column and each unit's KL (`kl_per_dim/03`) with step = epoch; artifacts =
config.json, summary.json (or failed.json) and the samples; tags `freebits.run_id`,
`freebits.sweep`, `freebits.state`. The MLflow run is FINISHED when the freebits run is done,
FAILED when it failed, RUNNING while it trains.

Idempotent, keyed by run id: a run is found again by its `freebits.run_id` tag, and its
`freebits.epochs` tag says which epochs are logged, so running export again logs only what is new.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freebits_cli.schema import ARTIFACTS

if TYPE_CHECKING:
    from freebits_cli.export.source import ExportRun

BATCH = 1000  # MLflow's limit of metrics per log_batch call
STATUS = {"done": "FINISHED", "failed": "FAILED"}


def default_uri(results_dir: Path) -> str:
    """sqlite:///RESULTS/mlflow.db: MLflow's default store since 3.7, kept beside the results."""
    return f"sqlite:///{(Path(results_dir) / 'mlflow.db').expanduser().resolve()}"


class MlflowTarget:
    """Writes runs to the tracking store at `uri` (a sqlite file, a server, a folder)."""

    name = "mlflow"

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        # Creating a sqlite store logs its schema migrations at INFO: not news for the user.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self._experiments: dict[str, str] = {}

    def where(self) -> str:
        return f"{self.uri} (view: mlflow ui --backend-store-uri {self.uri})"

    def _experiment(self, sweep: str) -> str:
        if sweep not in self._experiments:
            found = self.client.get_experiment_by_name(sweep)
            if found is not None:
                self._experiments[sweep] = found.experiment_id
            else:
                self._experiments[sweep] = self.client.create_experiment(
                    sweep, artifact_location=self._artifact_root(sweep)
                )
        return self._experiments[sweep]

    def _artifact_root(self, sweep: str) -> str | None:
        """Beside a sqlite file, `mlartifacts/<sweep>`; elsewhere the server decides (MLflow
        would otherwise put them under the current folder)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts" / sweep).resolve().as_uri()

    def _find(self, experiment: str, run_id: str) -> Any:
        found = self.client.search_runs(
            [experiment], filter_string=f"tags.`freebits.run_id` = '{run_id}'", max_results=1
        )
        return found[0] if found else None

    def write(self, run: ExportRun) -> tuple[int, int]:
        """Log what is new of `run`: (epochs added, 1 if its finished records were)."""
        from mlflow.entities import Metric, Param, RunTag

        experiment = self._experiment(run.sweep)
        found = self._find(experiment, run.run_id)
        if found is None:
            tags = {"freebits.run_id": run.run_id, "freebits.sweep": run.sweep}
            created = self.client.create_run(experiment, tags=tags, run_name=run.run_id)
            mlflow_id, tags_now = created.info.run_id, {}
            params = [Param(k, str(v)) for k, v in sorted(run.params.items())]
            for i in range(0, len(params), 100):  # MLflow's limit of params per call
                self.client.log_batch(mlflow_id, params=params[i : i + 100])
        else:
            mlflow_id, tags_now = found.info.run_id, found.data.tags
        done = int(tags_now.get("freebits.epochs", 0))
        metrics = self._new_metrics(run, done)
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(mlflow_id, metrics=[Metric(*m) for m in metrics[i : i + BATCH]])
        added, finished = max(run.epochs - done, 0), 0
        tags = [RunTag("freebits.state", run.state), RunTag("freebits.epochs", str(run.epochs))]
        self.client.log_batch(mlflow_id, tags=tags)
        if run.finished and tags_now.get("freebits.final") != run.state:
            for name in ARTIFACTS:
                if (run.folder / name).is_file():
                    self.client.log_artifact(mlflow_id, str(run.folder / name))
            for name, image in run.images.items():
                self.client.log_image(mlflow_id, image, artifact_file=f"samples/{name}.png")
            for name, lines in run.texts.items():
                self.client.log_text(mlflow_id, "\n".join(lines), f"samples/{name}.txt")
            self.client.set_tag(mlflow_id, "freebits.final", run.state)
            self.client.set_terminated(mlflow_id, STATUS[run.state])
            finished = 1
        return added, finished

    @staticmethod
    def _new_metrics(run: ExportRun, done: int) -> list[tuple[str, float, int, int]]:
        """(key, value, timestamp ms, step) of every epoch after `done`."""
        rows: list[tuple[str, float, int, int]] = []
        now = int(time.time() * 1000)
        if run.curves is not None:
            columns = run.scalar_columns()
            for _, row in run.curves[run.curves["epoch"] > done].iterrows():
                step = int(row["epoch"])
                rows += [(c, float(row[c]), now, step) for c in columns if row[c] == row[c]]
        if run.kl is not None:
            width = len(str(int(run.kl["dim"].max())))
            for _, row in run.kl[run.kl["epoch"] > done].iterrows():
                key = f"kl_per_dim/{str(int(row['dim'])).zfill(width)}"
                rows.append((key, float(row["kl"]), now, int(row["epoch"])))
        return rows

    def close(self) -> None:
        """Nothing to close: every call above is synchronous."""
