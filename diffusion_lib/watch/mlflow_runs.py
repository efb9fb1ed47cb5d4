"""MLflow runs of a study: one per training run (:class:`RunTracker`), the study as their parent
(:func:`log_study`); how they talk to the server is :mod:`diffusion_lib.watch.mlflow_client`.

On when a tracking URI is known (``tracking.mlflow_uri`` in the config, else the environment's
``MLFLOW_TRACKING_URI``, as MLflow users expect) and ``tracking.mlflow`` is true (the default).
The experiment is ``tracking.mlflow_experiment``, by default the study's name (``study``).

* A **training run** (a seed of a strategy) is one MLflow run, named ``<strategy>/seed<k>``, shared
  by the jobs that train it: the trunk pieces and the full budget's decay branch log the run's
  learning curve under the TensorBoard stream's tags (``val/mse_ema``, ``loss/total``, …), so the
  curve MLflow shows is ``curve.csv``'s; each smaller rung's branch logs under ``rung-<b>/…``.
  (A rung's ``curve.csv`` also holds the trunk's rows: those are the run's main keys.) Params:
  exactly what the run's key hashes (:meth:`~diffusion_lib.settings.run_config.TrainConfig.identity` at the
  full budget, its mining config, the validation split). Tags: study, strategy, seed, run folder
  and key, mining mode, torch version, device. Artifacts: each finished piece's ``curve.csv`` and
  ``status.json``. The MLflow run id is kept beside the run's checkpoints
  (``results/runs/<run>/mlflow.json``), so a resumed or later job continues the same run and rows an
  earlier attempt logged are not logged twice; a job that trains the run from step 0 (a new run,
  or one retrained in place after a code change) starts a new MLflow run and marks the old one
  superseded; a stored id the server no longer has (a reset store, a deleted run) is replaced.
  When a piece finishes, rows of its curve the server lacks (dropped while it was down) are sent.
* The **study** is a parent run (``study <study>``) carrying the verdict paragraph, outcome and
  settings (tags: a regenerated report may change them), the primary contrasts (metrics),
  ``verdict.json``, the contrast tables and ``report.html`` (artifacts); the training runs it
  reports on become its children.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .mlflow_client import ID_FILE, MlflowSettings, Sink, flat_params, log_batch, run_id_of
from .tensorboard import SCALARS, scalars


def metrics_of(prefix: str, row: Mapping[str, Any], stamp: int) -> list[tuple[str, float, int, int]]:
    """A curve row's finite scalars as MLflow metrics under the TensorBoard tags."""
    return [(prefix + tag, value, stamp, int(row["step"])) for tag, value in scalars(row)]


class RunTracker:
    """One training job's view of one run's MLflow run (a :class:`~diffusion_lib.train.progress.Tracker`)
    for one ``piece`` of the run: ``trunk``, ``full`` (the full budget's branch, or the whole run
    off the ladder) or ``rung-<b>``. The trunk and the full budget log under the run's main keys and
    a rung under ``rung-<b>/``; artifacts go under ``trunk/``, the root and ``rung-<b>/``."""

    def __init__(self, sink: Sink, settings: MlflowSettings, run_dir: str | Path, piece: str,
                 params: Mapping[str, Any], tags: Mapping[str, str]):
        self.sink, self.settings, self.run_dir, self.piece = sink, settings, Path(run_dir), piece
        self.prefix = "" if piece in ("trunk", "full") else f"{piece}/"
        self.params, self.tags = flat_params(params), dict(tags)
        self.run_id: str | None = None
        self.start_step = 0
        self.logged_to = -1  # the last step the server already holds for this piece

    def _ensure(self, client: Any) -> str:
        if self.run_id is None:
            name = self.settings.labels.get(self.run_dir.name, self.run_dir.name)
            self.run_id = run_id_of(client, self.run_dir, self.settings.scope, self.settings.experiment, name,
                                  self.tags, fresh=self.start_step == 0 and not self.prefix)
            history = client.get_metric_history(self.run_id, self.prefix + SCALARS["loss"])
            self.logged_to = max((m.step for m in history), default=-1)
            log_batch(client, self.run_id, params=self.params, tags=self.tags)
        return self.run_id

    def start(self, step: int) -> None:
        self.start_step = step
        self.sink.put(self._ensure)

    def log(self, row: Mapping[str, Any]) -> None:
        metrics, step = metrics_of(self.prefix, row, int(time.time() * 1000)), int(row["step"])

        def send(client: Any) -> None:
            run_id = self._ensure(client)
            if step > self.logged_to:
                log_batch(client, run_id, metrics)
                self.logged_to = step
        self.sink.put(send)

    def close(self) -> None:
        pass  # the job closes the sink once every output is written (finish)

    def finish(self, curve: Sequence[Mapping[str, Any]], files: Sequence[str | Path], status: str | None = None
               ) -> None:
        """The piece is written: send the rows of ``curve`` (its learning curve) the server lacks,
        attach ``files`` and, for the full budget, record ``status`` (``completed`` or ``diverged``)
        and mark the MLflow run finished."""
        rows = [dict(r) for r in curve if not self.prefix or int(r["step"]) > self.start_step]
        artifact_dir = None if self.piece == "full" else self.piece
        status = status if self.piece == "full" else None

        def send(client: Any) -> None:
            run_id = self._ensure(client)
            have = {m.step for m in client.get_metric_history(run_id, self.prefix + SCALARS["loss"])}
            stamp = int(time.time() * 1000)
            missing = [m for r in rows if int(r["step"]) not in have for m in metrics_of(self.prefix, r, stamp)]
            if missing:
                log_batch(client, run_id, missing)
            for f in files:
                client.log_artifact(run_id, str(f), artifact_dir)
            if status is not None:
                client.set_tag(run_id, "ired.status", status)
                client.set_terminated(run_id, "FINISHED")
        self.sink.put(send)


def log_study(settings: MlflowSettings, study_dir: str | Path, verdict_path: str | Path, contrasts_path: str | Path,
              files: Sequence[str | Path], flush_seconds: float | None = None) -> None:
    """The study's parent run: the verdict (tags ``verdict``, ``ired.outcome`` and its settings), the
    primary contrasts at the full budget (metrics ``<strategy>_vs_<versus>/estimate|ci_low|ci_high``),
    ``files`` (artifacts); every run of the study that has an MLflow run in this scope becomes its
    child. Kept in ``study_dir/mlflow.json``: a regenerated report updates the same run. Never
    raises: a failure is the one warning."""
    sink = Sink(settings.uri, flush_seconds=flush_seconds)
    try:
        verdict = json.loads(Path(verdict_path).read_text())
        with open(contrasts_path) as fh:
            contrasts = [r for r in csv.DictReader(fh) if r.get("endpoint_role") == "primary"]
        tags = {"study": settings.study, "ired.role": "study", "ired.outcome": str(verdict.get("outcome", "")),
                "verdict": str(verdict.get("paragraph") or verdict.get("sentence", "")),
                **{f"verdict.{k}": v for k, v in flat_params({k: verdict[k] for k in ("primary", "delta", "alpha", "budget")
                                                        if k in verdict}).items()}}
        stamp = int(time.time() * 1000)
        metrics = [(f"{c['strategy']}_vs_{c['versus']}/{k}", float(c[k]), stamp, 0) for c in contrasts
                   for k in ("estimate", "ci_low", "ci_high") if c.get(k) not in (None, "") and math.isfinite(float(c[k]))]
    except Exception as exc:
        sink.warn(f"reading the study's verdict: {type(exc).__name__}: {exc}")
        sink.close()
        return

    def send(client: Any) -> None:
        run_id = run_id_of(client, Path(study_dir), settings.scope, settings.experiment, f"study {settings.study}", tags)
        log_batch(client, run_id, metrics, tags=tags)
        for f in files:
            client.log_artifact(run_id, str(f))
        for folder in map(Path, settings.run_dirs):
            ids = json.loads((folder / ID_FILE).read_text()) if (folder / ID_FILE).exists() else {}
            if settings.scope in ids:
                client.set_tag(ids[settings.scope], "mlflow.parentRunId", run_id)
        client.set_terminated(run_id, "FINISHED")
    sink.put(send)
    sink.close()
