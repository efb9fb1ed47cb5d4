"""A study's status table: every training job of every run, queued / training / stopped / done /
diverged, how far it is, its latest validation MSE, its step rate and ETA, whether it is unstable
(its validation MSE above ``comparison.instability.factor`` × its best: :mod:`diffusion_lib.analysis.instability`),
and the study's ETA.

    python -m diffusion_lib.watch.status                      # the default study (config/config.yaml)
    python -m diffusion_lib.watch.status --configfile config/ablation.yaml --cores 4

Run it in the workflow's folder while ``snakemake`` runs, or after. It reads only files the jobs
write: finished outputs (``status.json`` of a run or rung, the sidecar of a saved trunk state) and
the heartbeat ``progress.json`` a training job rewrites at every log interval
(:mod:`diffusion_lib.train.progress`). A heartbeat older than ``--stale-minutes`` belongs to a job that is
no longer running (killed or timed out): it is shown as ``stopped``, and resumes from its checkpoint
when the workflow runs again. The study's ETA is the remaining training steps at each mode's
measured rate (the configured ``resources.steps_per_second`` until a job of that mode has reported)
spread over the parallel jobs; evaluation and the report come on top.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..analysis.instability import InstabilityRule
from ..plan.config import load_study_config
from ..plan.layout import Layout, RunSpec
from ..plan.study_plan import KINDS, StudyPlan, TrainJob
from ..train.progress import NAME, duration_text, read_heartbeat

COLUMNS = ["strategy", "seed", "job", "state", "step", "steps", "val_mse_ema", "steps_per_s", "eta", "stability"]


def study_config(configfiles: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The validated study config: ``config/config.yaml`` with each file of ``configfiles`` over it."""
    return load_study_config(["config/config.yaml", *configfiles])


def _jobs(plan: StudyPlan, spec: RunSpec) -> list[tuple[str, TrainJob, Path, Path]]:
    """(name, job, folder of its outputs and heartbeat, file that says it is done) of each training
    job of one run: its trunk pieces, smaller rungs and full budget, in that order (a rung
    until_stable may add counts once a look has added it)."""
    grown = plan.budgets.grown_so_far()
    rungs = {r.steps: r for r in plan.budgets.rungs(spec) if r.steps <= plan.full or r.steps in grown}
    points = {r.branch_point for r in rungs.values()}
    names = {"trunk": "trunk to {:,}", "branch": "rung {:,}", "train": "full budget"}
    out = []
    for job in sorted(plan.jobs_of(spec.run), key=lambda j: (KINDS.index(j.kind), j.to)):
        if job.to in points if job.kind == "trunk" else job.to in rungs:
            done = Path(job.files.outputs["sidecar" if job.kind == "trunk" else "status"])
            out.append((names[job.kind].format(job.to), job, done.parent, done))
    return out


def _state(done: Path, beat: Mapping[str, Any] | None, target: int, stale: float) -> tuple[str, int]:
    """(state, step reached) of one job."""
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("status") == "diverged" or info.get("diverged_at") is not None:
            return "diverged", int(info.get("steps_done", info.get("step", target)) or 0)
        return "done", target
    if beat is None or int(beat.get("steps", -1)) != target:
        return "queued", 0
    if beat.get("diverged_at") is not None:
        return "diverged", int(beat["step"])
    age = time.time() - float(beat.get("updated", 0))
    return ("training" if age < stale else "stopped"), int(beat["step"])


def status_rows(cfg: Mapping[str, Any], stale_minutes: float = 10.0) -> list[dict[str, Any]]:
    """One row per training job of the study (see the module docstring)."""
    plan = StudyPlan(cfg)
    rule = InstabilityRule.from_mapping(cfg["comparison"]["instability"])
    rows, seen = [], set()
    for spec in plan.layout.runs:
        if spec.run in seen:  # strategies sharing a run list it once
            continue
        seen.add(spec.run)
        for name, job, folder, done in _jobs(plan, spec):
            target = job.to
            beat = read_heartbeat(folder / NAME)
            state, step = _state(done, beat, target, 60 * stale_minutes)
            rate = float(beat["steps_per_s"]) if beat and state in ("training", "stopped") else math.nan
            live = beat is not None and beat.get("steps") == target
            val = float(beat["val_mse_ema"]) if live else _final_val(folder, done)
            rows.append({"strategy": spec.strategy, "seed": spec.seed, "mode": spec.mode, "job": name, "state": state,
                         "step": step, "steps": target, "trained_from": _start(job),
                         "val_mse_ema": val, "stability": _stability(folder, done, beat if live else None, rule),
                         "steps_per_s": rate, "eta_s": (target - step) / rate if rate > 0 else math.nan})
    return rows


def _stability(folder: Path, done: Path, beat: Mapping[str, Any] | None, rule: InstabilityRule) -> str:
    """``unstable at step s (k× its best)`` for a finished job whose curve trips the instability rule,
    ``now k× its best: unstable`` for a running one above the rule's factor, else empty."""
    curve = folder / "curve.csv"
    if done.exists() and done.name == "status.json" and curve.exists():
        hit = rule.curve(pd.read_csv(curve))
        return "" if hit is None else f"unstable at step {hit['step']:,} ({hit['ratio']:.1f}x its best)"
    ratio = float(beat.get("val_mse_over_best", math.nan)) if beat else math.nan
    return f"now {ratio:.1f}x its best: unstable" if ratio > rule.factor else ""


def tensorboard_spec(cfg: Mapping[str, Any]) -> str:
    """``tensorboard --logdir_spec`` argument showing the study's runs as ``<strategy>/seed<k>``
    (each holding the run's streams: ``tb``, ``trunk/tb``, ``rung-<b>/tb``; :mod:`diffusion_lib.watch.job_tracking`)."""
    layout, entries = Layout(cfg), {}
    for spec in layout.runs:
        entries.setdefault(f"{spec.strategy}/seed{spec.seed}", spec.dir)
    return ",".join(f"{name}:{folder}" for name, folder in entries.items())


def _final_val(folder: Path, done: Path) -> float:
    """A finished run's or rung's last validation MSE (EMA) from its curve.csv (NaN otherwise)."""
    curve = folder / "curve.csv"
    if not (done.exists() and done.name == "status.json" and curve.exists()):
        return math.nan
    with open(curve) as fh:
        values = [row.get("val_mse_ema", "") for row in csv.DictReader(fh)]
    finite = [float(v) for v in values if v not in ("", "nan") and math.isfinite(float(v))]
    return finite[-1] if finite else math.nan


def _start(job: TrainJob) -> int:
    """The step a job starts from: the trunk state it continues (its branch point for a rung or the
    full budget on the ladder, an earlier state for a trunk piece), or 0."""
    return int(Path(job.start).stem.removeprefix("step-")) if job.start else 0


def study_eta(rows: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any], cores: int) -> float:
    """Seconds of training left: each unfinished job's remaining steps at its mode's rate (measured
    by a running job of that mode, else the config's), over ``cores // threads`` parallel jobs."""
    measured: dict[str, list[float]] = {}
    for r in rows:
        if r["state"] == "training" and r["steps_per_s"] > 0:
            measured.setdefault(r["mode"], []).append(r["steps_per_s"])
    configured = cfg["resources"]["steps_per_second"]
    total = 0.0
    for r in rows:
        if r["state"] in ("done", "diverged"):
            continue
        rate = (sum(measured[r["mode"]]) / len(measured[r["mode"]]) if r["mode"] in measured
                else configured[r["mode"]])
        left = r["steps"] - max(r["step"], r["trained_from"])
        total += left / rate
    return total / max(1, cores // max(1, cfg["threads"]))


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as an aligned text table."""
    cells = [[str(r["strategy"]), str(r["seed"]), r["job"], r["state"], f"{r['step']:,} / {r['steps']:,}",
              "" if math.isnan(r["val_mse_ema"]) else f"{r['val_mse_ema']:.4g}",
              "" if math.isnan(r["steps_per_s"]) else f"{r['steps_per_s']:.3g}",
              "" if math.isnan(r["eta_s"]) else duration_text(r["eta_s"]), r.get("stability", "")] for r in rows]
    head = ["strategy", "seed", "job", "state", "step", "val MSE (EMA)", "steps/s", "ETA", "stability"]
    widths = [max(len(x) for x in col) for col in zip(head, *cells)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, cells)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", action="append", default=[], help="config overlays, as given to snakemake")
    parser.add_argument("--cores", type=int, default=4, help="the cores snakemake runs with (for the study's ETA)")
    parser.add_argument("--stale-minutes", type=float, default=10.0,
                        help="a heartbeat older than this is a job that no longer runs")
    parser.add_argument("--tensorboard", action="store_true",
                        help="print the tensorboard command that shows the study's runs by strategy and seed")
    args = parser.parse_args(argv)
    cfg = study_config(args.configfile)
    if args.tensorboard:
        print(f"tensorboard --logdir_spec {tensorboard_spec(cfg)}")
        return
    rows = status_rows(cfg, args.stale_minutes)
    print(table(rows))
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "training", "stopped", "queued", "diverged")}
    print(f"\nstudy {cfg['study']}: {len(rows)} training jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    print(f"training left: about {duration_text(study_eta(rows, cfg, args.cores))} with --cores {args.cores} "
          "(evaluation and the report come on top)")


if __name__ == "__main__":
    main()
