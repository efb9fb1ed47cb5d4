"""The trackers of one training job's runs (:class:`JobTracking`): a TensorBoard stream each
(:mod:`diffusion_lib.watch.tensorboard`) and, when a tracking URI is set, an MLflow run each
(:mod:`diffusion_lib.watch.mlflow_runs`).

Trackers only watch: they get the curve rows the engine has already made and write beside a job's
outputs, never into them (the code fingerprint leaves them out: :data:`diffusion_lib.settings.provenance.OBSERVERS`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from ..train.progress import Tracker
from .tensorboard import TensorBoardStream
from .tensorboard import stream_dir

if TYPE_CHECKING:
    from .mlflow_client import MlflowSettings

log = logging.getLogger(__name__)

class Trackers:
    """Several trackers watching one run."""

    def __init__(self, trackers: Sequence[Tracker]):
        self.trackers = list(trackers)

    def start(self, step: int) -> None:
        for t in self.trackers:
            t.start(step)

    def log(self, row: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log(row)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


class JobTracking:
    """The trackers of one training job's runs (``runs``: the job's run specs, each with ``run``,
    ``seed``, ``dir``, ``resume_path`` and, for a rung, ``steps``; ``full_steps``: the run's full
    budget). ``tensorboard``: a stream beside each run's checkpoint; ``mlflow``: each run's MLflow
    run (None: off), with ``params[i]`` (what shapes run i) and ``tags``. Use as a context manager:
    leaving it waits (boundedly) for what MLflow still has queued."""

    def __init__(self, runs: Sequence[Mapping[str, Any]], *, full_steps: int, tensorboard: bool = False,
                 mlflow: "MlflowSettings | None" = None, params: Sequence[Mapping[str, Any]] | None = None,
                 tags: Mapping[str, str] | None = None):
        self.sink: Any = None
        self.mlflow: list[Any] = [None] * len(runs)
        if mlflow is not None:
            from .mlflow_runs import RunTracker
            from .mlflow_client import Sink

            self.sink = Sink(mlflow.uri)
            for i, r in enumerate(runs):
                steps = int(r.get("steps", full_steps))
                piece = "trunk" if "trunk_to" in r else "full" if steps == full_steps else f"rung-{steps}"
                label = mlflow.labels.get(r["run"], r["run"])
                run_tags = {**(tags or {}), "study": mlflow.study, "run": r["run"], "run_key": r["run"].rsplit("-", 1)[-1],
                            "seed": str(r["seed"]), "strategy": "+".join(n.split("/")[0] for n in label.split("+"))}
                self.mlflow[i] = RunTracker(self.sink, mlflow, r["dir"], piece, params[i] if params else {}, run_tags)
        self.trackers: list[Tracker | None] = []
        for r, ml in zip(runs, self.mlflow):
            tb = TensorBoardStream(stream_dir(r["resume_path"])) if tensorboard and r.get("resume_path") else None
            parts = [t for t in (tb, ml) if t is not None]
            self.trackers.append(Trackers(parts) if parts else None)

    def finish(self, i: int, curve: Sequence[Mapping[str, Any]], files: Sequence[str | Path],
               status: str | None = None) -> None:
        """Run ``i``'s piece is written: its MLflow run gets the rows of ``curve`` it lacks, ``files``
        and, for the full budget, its ``status`` (``completed`` or ``diverged``)."""
        if self.mlflow[i] is not None:
            self.mlflow[i].finish(curve, files, status)

    def __enter__(self) -> "JobTracking":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.sink is not None:
            self.sink.close()
