"""How a job talks to MLflow: its settings (:func:`settings`), a background sink that never fails,
stalls or slows a job (:class:`Sink`), and the run ids kept beside a run's outputs.

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

import fcntl
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


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


def run_id_of(client: Any, folder: Path, scope: str, experiment: str, name: str, tags: Mapping[str, str],
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


def flat_params(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested mapping as MLflow params: dotted keys, string values (at most MAX_VALUE characters)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out |= flat_params(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): (json.dumps(value) if isinstance(value, (list, tuple)) else str(value))[:MAX_VALUE]}


def log_batch(client: Any, run_id: str, metrics: Sequence[tuple[str, float, int, int]] = (),
               params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metric_list = [Metric(k, v, t, s) for k, v, t, s in metrics]
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, v[:MAX_TAG]) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metric_list), len(param_list), len(tag_list), 1), 100):  # MLflow's batch limits
        client.log_batch(run_id, metrics=metric_list[i:i + 100], params=param_list[i:i + 100],
                         tags=tag_list[i:i + 100])
