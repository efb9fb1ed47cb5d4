"""MLflow tracking of a study: one MLflow run per training run, the study as their parent run.

On when a tracking URI is known (``tracking.mlflow_uri`` in the config, else the environment's
``MLFLOW_TRACKING_URI``, as MLflow users expect) and ``tracking.mlflow`` is true (the default).
The experiment is ``tracking.mlflow_experiment``, by default the study's name (``study``).

* A **training run** (a seed of a strategy) is one MLflow run, named ``<strategy>/seed<k>``, shared
  by the jobs that train it: the trunk pieces and the full budget's decay branch log the run's
  learning curve under the TensorBoard stream's tags (``val/mse_ema``, ``loss/total``, …), so the
  curve MLflow shows is ``curve.csv``'s; each smaller rung's branch logs under ``rung-<b>/…``.
  (A rung's ``curve.csv`` also holds the trunk's rows: those are the run's main keys.) Params:
  exactly what the run's key hashes (:meth:`~diffusion_lib.spec.run_config.TrainConfig.identity` at the
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

A tracking server that is down, slow or answers with errors never fails, stalls or slows a job:
every call to MLflow runs on one background thread per job behind a bounded queue (a full queue
drops events), each HTTP request is bounded (``MLFLOW_HTTP_REQUEST_TIMEOUT`` 5 s and one retry
unless set), the job logs one warning at the first failure, and at its end waits at most
``FLUSH_SECONDS`` for what is still queued. ``results/`` stays the source of truth. The client is
imported and built on the job's thread before training starts (no network), so the import's CPU
time is not counted as training time; the thread's per-row work (a JSON request per log interval)
is, and is measured by ``tools/tracking_overhead.py``.
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

from .job_tracking import SCALARS, scalars

log = logging.getLogger(__name__)

CAPACITY = 10_000          # queued calls per job; beyond it events are dropped (and counted)
FLUSH_SECONDS = 10.0       # at a job's end, the longest wait for queued calls
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
ID_FILE = "mlflow.json"    # beside a run's (or study's) outputs: {"<uri> <experiment>": run id}
MAX_VALUE = 500            # the longest param value every MLflow server since 2.9 accepts
MAX_TAG = 5000             # and the longest tag value


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
    ``config``: the study's config as Snakemake holds it (validated here only when tracking is on).
    Never raises: a config it cannot read turns tracking off with a warning."""
    from ..plan.config import option

    uri = option(config, "tracking.mlflow_uri") or environ.get("MLFLOW_TRACKING_URI", "")
    if not uri or not option(config, "tracking.mlflow"):
        return None
    try:
        return _settings(config, uri)
    except Exception as exc:
        log.warning("MLflow tracking is off for this job: %s: %s", type(exc).__name__, exc)
        return None


def _settings(config: Mapping[str, Any], uri: str) -> MlflowSettings:
    from ..plan.config import load_config
    from ..plan.layout import Layout

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
    never blocks; :meth:`close` waits at most ``flush_seconds``. The client is built here, on the
    caller's thread (an import, no network); without mlflow, one warning and nothing is queued."""

    def __init__(self, uri: str, capacity: int = CAPACITY, flush_seconds: float | None = None):
        self.uri = uri
        self.flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.queue: queue.Queue[Callable[[Any], None] | None] = queue.Queue(capacity)
        self.failures = self.dropped = self.sent = 0
        self._warned = False
        self._lock = threading.Lock()
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retry notes: our one warning says it
        try:
            from mlflow import MlflowClient

            self.client: Any = MlflowClient(tracking_uri=uri)
        except Exception as exc:  # mlflow missing, or a URI it cannot use
            self.client = None
            self.warn(f"{type(exc).__name__}: {exc}")
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    def put(self, call: Callable[[Any], None]) -> None:
        """Queue ``call(client)``; when the queue is full, drop it."""
        if self.client is None:
            return
        try:
            self.queue.put_nowait(call)
        except queue.Full:
            self.dropped += 1
            self.warn(f"its queue is full ({self.queue.maxsize} calls): the server is slow or down")

    def warn(self, reason: Any) -> None:
        """The job's one warning about MLflow (later failures are only counted)."""
        with self._lock:
            if self._warned:
                return
            self._warned = True
        log.warning("MLflow tracking at %s failed (%s); training goes on, results/ holds every number, "
                    "further MLflow errors are only counted", self.uri, reason)

    def _work(self) -> None:
        while True:
            call = self.queue.get()
            if call is None:
                return
            try:
                call(self.client)
                self.sent += 1
            except Exception as exc:
                self.failures += 1
                self.warn(f"{type(exc).__name__}: {str(exc)[:300]}")

    def close(self) -> None:
        """Send what is queued, waiting at most ``flush_seconds``; what is left is abandoned."""
        deadline = time.monotonic() + self.flush_seconds
        try:
            self.queue.put(None, timeout=self.flush_seconds)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        alive = self._thread.is_alive()
        if alive:
            self.warn(f"no answer within {self.flush_seconds:.0f} s of the job's end")
        if self.failures or self.dropped or alive:
            log.info("MLflow: %d calls sent, %d failed, %d dropped%s", self.sent, self.failures, self.dropped,
                     f", about {self.queue.qsize() + 1} abandoned after waiting {self.flush_seconds:.0f} s" if alive else "")


def _experiment_id(client: Any, name: str) -> str:
    """The experiment ``name``, created if missing (another job may create it at the same time)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _alive(client: Any, run_id: str) -> bool:
    """Whether the server still has run ``run_id`` (not deleted)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def _run_id(client: Any, folder: Path, scope: str, experiment: str, name: str, tags: Mapping[str, str],
            fresh: bool = False) -> str:
    """The MLflow run kept in ``folder/mlflow.json`` for ``scope``; a new one (under a file lock, so
    the concurrent jobs of a run share one) if there is none, if the server lost it, or if ``fresh``
    (the old one is then tagged superseded)."""
    experiment_id = _experiment_id(client, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{ID_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = folder / ID_FILE
        ids = json.loads(path.read_text()) if path.exists() else {}
        old = ids.get(scope)
        if old is not None and not fresh and _alive(client, old):
            return old
        new = client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
        ids[scope] = new
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids, indent=1))
        os.replace(tmp, path)
    if old is not None and fresh:
        try:
            client.set_tag(old, "ired.superseded_by", new)
            client.set_terminated(old, "KILLED")
        except Exception:
            pass  # it may be gone
    return new


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping as MLflow params: dotted keys, string values (at most MAX_VALUE characters)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): (json.dumps(value) if isinstance(value, (list, tuple)) else str(value))[:MAX_VALUE]}


def _log_batch(client: Any, run_id: str, metrics: Sequence[tuple[str, float, int, int]] = (),
               params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metric_list = [Metric(k, v, t, s) for k, v, t, s in metrics]
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, v[:MAX_TAG]) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metric_list), len(param_list), len(tag_list), 1), 100):  # MLflow's batch limits
        client.log_batch(run_id, metrics=metric_list[i:i + 100], params=param_list[i:i + 100],
                         tags=tag_list[i:i + 100])


def _metrics(prefix: str, row: Mapping[str, Any], stamp: int) -> list[tuple[str, float, int, int]]:
    """A curve row's finite scalars as MLflow metrics under the TensorBoard tags."""
    return [(prefix + tag, value, stamp, int(row["step"])) for tag, value in scalars(row)]


class RunTracker:
    """One training job's view of one run's MLflow run (a :class:`~diffusion_lib.watch.job_tracking.Tracker`)
    for one ``piece`` of the run: ``trunk``, ``full`` (the full budget's branch, or the whole run
    off the ladder) or ``rung-<b>``. The trunk and the full budget log under the run's main keys and
    a rung under ``rung-<b>/``; artifacts go under ``trunk/``, the root and ``rung-<b>/``."""

    def __init__(self, sink: Sink, settings: MlflowSettings, run_dir: str | Path, piece: str,
                 params: Mapping[str, Any], tags: Mapping[str, str]):
        self.sink, self.settings, self.run_dir, self.piece = sink, settings, Path(run_dir), piece
        self.prefix = "" if piece in ("trunk", "full") else f"{piece}/"
        self.params, self.tags = _flat(params), dict(tags)
        self.run_id: str | None = None
        self.start_step = 0
        self.logged_to = -1  # the last step the server already holds for this piece

    def _ensure(self, client: Any) -> str:
        if self.run_id is None:
            name = self.settings.labels.get(self.run_dir.name, self.run_dir.name)
            self.run_id = _run_id(client, self.run_dir, self.settings.scope, self.settings.experiment, name,
                                  self.tags, fresh=self.start_step == 0 and not self.prefix)
            history = client.get_metric_history(self.run_id, self.prefix + SCALARS["loss"])
            self.logged_to = max((m.step for m in history), default=-1)
            _log_batch(client, self.run_id, params=self.params, tags=self.tags)
        return self.run_id

    def start(self, step: int) -> None:
        self.start_step = step
        self.sink.put(self._ensure)

    def log(self, row: Mapping[str, Any]) -> None:
        metrics, step = _metrics(self.prefix, row, int(time.time() * 1000)), int(row["step"])

        def send(client: Any) -> None:
            run_id = self._ensure(client)
            if step > self.logged_to:
                _log_batch(client, run_id, metrics)
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
            missing = [m for r in rows if int(r["step"]) not in have for m in _metrics(self.prefix, r, stamp)]
            if missing:
                _log_batch(client, run_id, missing)
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
                **{f"verdict.{k}": v for k, v in _flat({k: verdict[k] for k in ("primary", "delta", "alpha", "budget")
                                                        if k in verdict}).items()}}
        stamp = int(time.time() * 1000)
        metrics = [(f"{c['strategy']}_vs_{c['versus']}/{k}", float(c[k]), stamp, 0) for c in contrasts
                   for k in ("estimate", "ci_low", "ci_high") if c.get(k) not in (None, "") and math.isfinite(float(c[k]))]
    except Exception as exc:
        sink.warn(f"reading the study's verdict: {type(exc).__name__}: {exc}")
        sink.close()
        return

    def send(client: Any) -> None:
        run_id = _run_id(client, Path(study_dir), settings.scope, settings.experiment, f"study {settings.study}", tags)
        _log_batch(client, run_id, metrics, tags=tags)
        for f in files:
            client.log_artifact(run_id, str(f))
        for folder in map(Path, settings.run_dirs):
            ids = json.loads((folder / ID_FILE).read_text()) if (folder / ID_FILE).exists() else {}
            if settings.scope in ids:
                client.set_tag(ids[settings.scope], "mlflow.parentRunId", run_id)
        client.set_terminated(run_id, "FINISHED")
    sink.put(send)
    sink.close()
