"""MLflow tracking of a study: one MLflow run per training run, the study as their parent run.

On when a tracking URI is known (``tracking.mlflow_uri`` in the config, else the environment's
``MLFLOW_TRACKING_URI``, as MLflow users expect) and ``tracking.mlflow`` is true (the default).
The experiment is ``tracking.mlflow_experiment``, by default the study's name (``study``).

* A **training run** (a seed of a strategy) is one MLflow run, named ``<strategy>/seed<k>``, shared
  by the jobs that train it: the trunk pieces and the full budget's decay branch log the run's
  learning curve under the TensorBoard stream's tags (``val/mse_ema``, ``loss/total``, …), so the
  curve MLflow shows is ``curve.csv``'s; each smaller rung's branch logs under ``rung-<b>/…``.
  Params: everything that shapes the run (the training block, mining config, rank, eps). Tags:
  study, strategy, seed, run folder and key, mining mode, torch version, device. Artifacts: each
  finished piece's ``curve.csv`` and ``status.json``. The MLflow run id is kept beside the run's
  checkpoints (``results/runs/<run>/mlflow.json``), so a resumed or later job continues the same
  run; rows an earlier attempt already logged are not logged twice.
* The **study** is a parent run (``study <study>``) carrying the verdict sentence and outcome (tags),
  the primary contrasts (metrics), ``verdict.json``, the contrast tables and ``report.html``
  (artifacts); the training runs it reports on become its children.

A tracking server that is down, slow or answers with errors never fails, stalls or slows a job:
every call to MLflow runs on one background thread per job behind a bounded queue (a full queue
drops events), each HTTP request is bounded (``MLFLOW_HTTP_REQUEST_TIMEOUT`` 5 s and one retry
unless set), the job logs one warning at the first failure, and at its end waits at most
``FLUSH_SECONDS`` for what is still queued. ``results/`` stays the source of truth.
"""
from __future__ import annotations

import csv
import fcntl
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .tracking import SCALARS

log = logging.getLogger("diffusion_lib.mlflow_tracking")

CAPACITY = 10_000          # queued calls per job; beyond it events are dropped (and counted)
FLUSH_SECONDS = 10.0       # at a job's end, the longest wait for queued calls
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
ID_FILE = "mlflow.json"    # beside a run's (or study's) outputs: {"<uri> <experiment>": run id}


@dataclass(frozen=True)
class MlflowSettings:
    """Where a study logs: tracking URI, experiment, study name, and each run folder's label
    (``<strategy>/seed<k>`` in this study)."""
    uri: str
    experiment: str
    study: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    run_dirs: tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        return f"{self.uri} {self.experiment}"


def settings(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> MlflowSettings | None:
    """The study's MLflow settings, or None when tracking is off (no URI, or ``tracking.mlflow: false``).
    ``config``: the study's config as Snakemake holds it (validated here only when tracking is on)."""
    from .config import load_config, option

    uri = option(config, "tracking.mlflow_uri") or environ.get("MLFLOW_TRACKING_URI", "")
    if not uri or not option(config, "tracking.mlflow"):
        return None
    from .layout import Layout

    config = load_config(config)
    tracking = config["tracking"]

    labels: dict[str, list[str]] = {}
    layout = Layout(config)
    for spec in layout.runs:
        labels.setdefault(spec.run, []).append(f"{spec.strategy}/seed{spec.seed}")
    study = str(config["study"])
    return MlflowSettings(uri, tracking["mlflow_experiment"] or study, study,
                          {run: "+".join(names) for run, names in labels.items()},
                          tuple(dict.fromkeys(spec.dir for spec in layout.runs)))


class Sink:
    """Calls to MLflow made on one background thread, in order, behind a bounded queue: ``put``
    never blocks; :meth:`close` waits at most ``flush_seconds``."""

    def __init__(self, uri: str, capacity: int = CAPACITY, flush_seconds: float | None = None):
        self.uri = uri
        self.flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.queue: queue.Queue[Callable[[Any], None] | None] = queue.Queue(capacity)
        self.failures = self.dropped = self.sent = 0
        self._warned = False
        self._client: Any = None
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    def put(self, call: Callable[[Any], None]) -> None:
        """Queue ``call(client)``; when the queue is full, drop it."""
        try:
            self.queue.put_nowait(call)
        except queue.Full:
            self.dropped += 1
            self._warn(f"its queue is full ({self.queue.maxsize} calls): the server is slow or down")

    def _warn(self, reason: Any) -> None:
        if not self._warned:
            self._warned = True
            log.warning("MLflow tracking at %s failed (%s); training goes on, results/ holds every number, "
                        "further MLflow errors are only counted", self.uri, reason)

    def _connect(self) -> Any:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retry notes: our one warning says it
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def _work(self) -> None:
        try:
            self._client = self._connect()
        except Exception as exc:  # mlflow missing or the URI unusable: count every call as failed
            self._warn(f"{type(exc).__name__}: {exc}")
        while True:
            call = self.queue.get()
            if call is None:
                return
            if self._client is None:
                self.failures += 1
                continue
            try:
                call(self._client)
                self.sent += 1
            except Exception as exc:
                self.failures += 1
                self._warn(f"{type(exc).__name__}: {str(exc)[:300]}")

    def close(self) -> None:
        """Send what is queued, waiting at most ``flush_seconds``; what is left is abandoned."""
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                self.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                break
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left = self.queue.qsize() + (1 if self._thread.is_alive() else 0)
        if self._thread.is_alive():
            self._warn(f"no answer within {self.flush_seconds:.0f} s of the job's end")
        if self.failures or self.dropped or self._thread.is_alive():
            log.info("MLflow: %d calls sent, %d failed, %d dropped, about %d abandoned after %.0f s",
                     self.sent, self.failures, self.dropped, left, self.flush_seconds)


def _run_id(client: Any, folder: Path, scope: str, experiment: str, name: str, tags: Mapping[str, str]) -> str:
    """The MLflow run kept in ``folder/mlflow.json`` for ``scope``, created (under a file lock, so
    a run's concurrent jobs share one) if there is none."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{ID_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / ID_FILE
        ids = json.loads(path.read_text()) if path.exists() else {}
        if scope not in ids:
            found = client.get_experiment_by_name(experiment)
            exp = found.experiment_id if found is not None else client.create_experiment(experiment)
            ids[scope] = client.create_run(exp, run_name=name, tags=dict(tags)).info.run_id
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(ids, indent=1))
            os.replace(tmp, path)
        return ids[scope]


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping as MLflow params: dotted keys, string values."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


def _log_batch(client: Any, run_id: str, metrics: Sequence[tuple[str, float, int, int]] = (),
               params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metric_list = [Metric(k, v, t, s) for k, v, t, s in metrics]
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metric_list), len(param_list), len(tag_list), 1), 100):  # MLflow's batch limits
        client.log_batch(run_id, metrics=metric_list[i:i + 100], params=param_list[i:i + 100],
                         tags=tag_list[i:i + 100])


class RunTracker:
    """One training job's view of one run's MLflow run (a :class:`~diffusion_lib.tracking.Tracker`):
    ``prefix`` is ``""`` for the trunk and the full budget, ``rung-<b>/`` for a smaller rung."""

    def __init__(self, sink: Sink, settings: MlflowSettings, run_dir: str | Path, prefix: str,
                 params: Mapping[str, Any], tags: Mapping[str, str]):
        self.sink, self.settings, self.run_dir, self.prefix = sink, settings, Path(run_dir), prefix
        self.params, self.tags = _flat(params), dict(tags)
        self.run_id: str | None = None
        self.logged_to = -1  # the last step the server already holds for this piece

    def _ensure(self, client: Any) -> str:
        if self.run_id is None:
            name = self.settings.labels.get(self.run_dir.name, self.run_dir.name)
            run_id = _run_id(client, self.run_dir, self.settings.scope, self.settings.experiment, name, self.tags)
            _log_batch(client, run_id, params=self.params, tags=self.tags)
            history = client.get_metric_history(run_id, self.prefix + SCALARS["loss"])
            self.logged_to = max((m.step for m in history), default=-1)
            self.run_id = run_id
        return self.run_id

    def start(self, step: int) -> None:
        self.sink.put(self._ensure)

    def log(self, row: Mapping[str, Any]) -> None:
        stamp, step = int(time.time() * 1000), int(row["step"])
        metrics = [(self.prefix + tag, float(row[key]), stamp, step) for key, tag in SCALARS.items()
                   if row.get(key) is not None and math.isfinite(row[key])]

        def send(client: Any) -> None:
            run_id = self._ensure(client)
            if step > self.logged_to:
                _log_batch(client, run_id, metrics)
                self.logged_to = step
        self.sink.put(send)

    def close(self) -> None:
        pass  # the job closes the sink once every output is written (finish)

    def finish(self, files: Sequence[str | Path], artifact_dir: str | None, status: str | None) -> None:
        """Attach ``files`` (under ``artifact_dir``); with ``status`` (the full budget is trained:
        ``done`` or ``diverged``) mark the MLflow run finished."""
        def send(client: Any) -> None:
            run_id = self._ensure(client)
            for f in files:
                client.log_artifact(run_id, str(f), artifact_dir)
            if status is not None:
                client.set_tag(run_id, "ired.status", status)
                client.set_terminated(run_id, "FINISHED")
        self.sink.put(send)


def log_study(settings: MlflowSettings, study_dir: str | Path, verdict_path: str | Path, contrasts_path: str | Path,
              files: Sequence[str | Path], flush_seconds: float | None = None) -> None:
    """The study's parent run: the verdict (tags ``verdict``, ``ired.outcome``), the primary contrasts
    at the full budget (metrics ``<strategy>_vs_<versus>/estimate|ci_low|ci_high``), the verdict's
    settings (params), ``files`` (artifacts); every run of the study that has an MLflow run in this
    scope becomes its child. Kept in ``study_dir/mlflow.json``: a regenerated report updates it."""
    verdict = json.loads(Path(verdict_path).read_text())
    with open(contrasts_path) as fh:
        contrasts = [r for r in csv.DictReader(fh) if r.get("endpoint_role") == "primary"]
    params = {k: verdict[k] for k in ("primary", "delta", "alpha", "budget") if k in verdict}
    run_dirs = settings.run_dirs
    sink = Sink(settings.uri, flush_seconds=flush_seconds)
    tags = {"study": settings.study, "ired.role": "study", "ired.outcome": str(verdict.get("outcome", "")),
            "verdict": str(verdict.get("paragraph") or verdict.get("sentence", ""))[:4900]}
    stamp = int(time.time() * 1000)
    metrics = [(f"{c['strategy']}_vs_{c['versus']}/{k}", float(c[k]), stamp, 0) for c in contrasts
               for k in ("estimate", "ci_low", "ci_high") if c.get(k) not in (None, "") and math.isfinite(float(c[k]))]

    def send(client: Any) -> None:
        run_id = _run_id(client, Path(study_dir), settings.scope, settings.experiment, f"study {settings.study}", tags)
        _log_batch(client, run_id, metrics, _flat(params), tags)
        for f in files:
            client.log_artifact(run_id, str(f))
        for folder in map(Path, run_dirs):
            ids = json.loads((folder / ID_FILE).read_text()) if (folder / ID_FILE).exists() else {}
            if settings.scope in ids:
                client.set_tag(ids[settings.scope], "mlflow.parentRunId", run_id)
        client.set_terminated(run_id, "FINISHED")
    sink.put(send)
    sink.close()
