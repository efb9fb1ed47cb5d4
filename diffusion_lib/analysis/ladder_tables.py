"""Tables of the budget ladder (method §8.1): every arm and every contrast at every rung, and the
compute-matched view, from the rung models' evaluation files. The seed is the unit throughout.

A *rung* is one (strategy, seed) trained to one budget with its own decay (:mod:`diffusion_lib.settings.ladder`):
``kind`` ``ladder`` for the study's ladder of budgets (the largest is the run itself) and
``compute_matched`` for a mining arm's budget at which its cumulative training FLOPs equal the
baseline's at the full budget. Each rung model's ``metrics.json`` has a run's format
(:func:`tables.load_run`); rungs below the full budget score only the inner steps {0, default}.

* :func:`rung_values`: the long table of one value per (rung model, endpoint);
* :func:`ladder_table`: per rung and arm, each endpoint's mean, sd and Student-t CI over seeds, with
  the rung's training samples and their share of the paper's, and the skill versus the per-entry-mean
  predictor;
* :func:`ladder_contrasts_table`: per ladder rung, each mining arm versus the baseline on every
  endpoint, exactly as the full-budget contrasts (:func:`tables.contrasts_table`: the primary CI at
  the verdict's Bonferroni level, the secondary ones at 1 - alpha with Holm within each contrast);
* :func:`compute_matched_table`: each mining arm's compute-matched rung versus the baseline's full
  budget on the primary endpoint.
"""
from __future__ import annotations

import logging
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import tables as tab
from .instability import InstabilityRule, blank_unstable
from .statistics import judged_change, summarize
from .trend import INFORMATIVE_SKILL

log = logging.getLogger(__name__)

LADDER, COMPUTE_MATCHED = "ladder", "compute_matched"
VALUE_COLUMNS = ["strategy", "mode", "seed", "rung", "kind", "samples", "endpoint", "label", "value"]


def rung_values(rungs: Sequence[Mapping[str, Any]], endpoints: Sequence[tab.Endpoint]
                ) -> tuple[pd.DataFrame, list[str]]:
    """One row per completed rung model and endpoint (``VALUE_COLUMNS``), and the names
    (``strategy/seedN@steps kind``) of the rungs whose files are missing (skipped with a warning)."""
    frames, missing = [], []
    for r in rungs:
        if not (Path(r["metrics"]).exists() and Path(r["curve"]).exists()):
            missing.append(f"{r['strategy']}/seed{r['seed']}@{r['rung']} {r['kind']}")
            continue
        with open(r["metrics"]) as fh:
            m = {**json.load(fh), "strategy": r["strategy"], "seed": int(r["seed"]), "run": r.get("run")}
        values = tab.endpoint_values(tab.runs_table([m]), endpoints)
        frames.append(values.assign(rung=int(r["rung"]), kind=r["kind"], samples=int(r["samples"])))
    if missing:
        log.warning("missing rung models (excluded): %s", ", ".join(missing))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=VALUE_COLUMNS)
    return frame.reindex(columns=VALUE_COLUMNS), missing


def every_run_informative(values: Sequence[float], entry_mean: float) -> bool:
    """Whether every run's value (MSE) beats the per-entry-mean predictor's ``entry_mean`` by at least
    :data:`~diffusion_lib.analysis.trend.INFORMATIVE_SKILL` (False without values): an informative rung (method §8.1)."""
    x = np.asarray(list(values), dtype=float)
    return bool(len(x)) and bool(np.all(1 - x / entry_mean >= INFORMATIVE_SKILL))


def _entry_mean(endpoint: str, trivial: Mapping[str, Mapping[str, float]]) -> float:
    """The per-entry-mean predictor's MSE on the endpoint's test set."""
    return float(trivial.get(endpoint.split("/")[0], {}).get("entry_mean", math.nan))


def ladder_table(values: pd.DataFrame, primary: tab.Endpoint, paper_samples: float,
                 trivial: Mapping[str, Mapping[str, float]], confidence: float = 0.95) -> pd.DataFrame:
    """Per (kind, rung, strategy, endpoint): n, mean, sd and the Student-t CI (at ``confidence``) over
    seeds, the rung's samples and share of ``paper_samples``, and the skill 1 - mean / MSE(per-entry mean)."""
    rows = []
    for (kind, rung, strategy, endpoint), g in values.groupby(["kind", "rung", "strategy", "endpoint"], sort=False):
        s = summarize(g["value"].tolist(), confidence)
        samples = int(g["samples"].iloc[0])
        rows.append({"kind": kind, "rung": int(rung), "samples": samples, "paper_share": samples / paper_samples,
                     "strategy": strategy, "mode": g["mode"].iloc[0], "endpoint": endpoint,
                     "label": g["label"].iloc[0], "endpoint_role": "primary" if endpoint == primary.key else "secondary",
                     "n": s["n"], "mean": s["mean"], "sd": s["std"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                     "confidence": confidence, "skill": 1 - s["mean"] / _entry_mean(endpoint, trivial)})
    columns = ["kind", "rung", "samples", "paper_share", "strategy", "mode", "endpoint", "label", "endpoint_role", "n",
               "mean", "sd", "ci_low", "ci_high", "confidence", "skill"]
    table = pd.DataFrame(rows, columns=columns)
    order = [table["kind"] != LADDER, table["rung"], table["endpoint_role"] != "primary"]
    return table.iloc[np.lexsort(order[::-1])].reset_index(drop=True)


def ladder_contrasts_table(values: pd.DataFrame, pairs: Sequence[tuple[str, str, str]], primary: tab.Endpoint,
                           delta: float, alpha: float, primary_confidence: float, paper_samples: float) -> pd.DataFrame:
    """Every (strategy, versus) of ``pairs`` at every ladder rung, on every endpoint (see the module
    docstring), with the rung's steps and samples."""
    frames = []
    ladder = values[values["kind"] == LADDER]
    for rung, g in ladder.groupby("rung", sort=True):
        samples = int(g["samples"].iloc[0])
        c = tab.contrasts_table(g, pairs, primary, delta, alpha, primary_confidence)
        frames.append(c.assign(rung=int(rung), samples=samples, paper_share=samples / paper_samples))
    if not frames:
        return pd.DataFrame(columns=["rung", "samples", "paper_share", *tab.CONTRAST_COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    return table[["rung", "samples", "paper_share", *tab.CONTRAST_COLUMNS]]


def compute_matched_table(values: pd.DataFrame, mining: Sequence[str], baseline: str, primary: tab.Endpoint,
                          full_rung: int, delta: float, confidence: float, paper_samples: float,
                          trivial: Mapping[str, Mapping[str, float]] | None = None,
                          unstable: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each mining arm's primary endpoint at its compute-matched rung (its own decay branch at the
    budget where its cumulative FLOPs equal the baseline's full budget) versus the baseline's at the
    full budget ``full_rung``: relative change with its CI at ``confidence`` and Welch's p;
    ``informative`` when every run of both has skill ≥ 5% (method §8.1, from ``trivial``) and
    ``unstable`` (estimate blanked) when a run of either is unstable there (``unstable`` rows)."""
    on = values[values["endpoint"] == primary.key]
    base = on[(on["kind"] == LADDER) & (on["strategy"] == baseline) & (on["rung"] == full_rung)]
    rows = []
    for strategy in mining:
        arm = on[(on["kind"] == COMPUTE_MATCHED) & (on["strategy"] == strategy)]
        if arm.empty:
            continue
        a, b = arm["value"].tolist(), base["value"].tolist()
        change = judged_change(a, b, delta, confidence)
        steps, samples = int(arm["rung"].iloc[0]), int(arm["samples"].iloc[0])
        blown = unstable is not None and bool(len(unstable)) and bool((
            ((unstable["strategy"] == strategy) & (unstable["rung"] == steps) & (unstable["kind"] == COMPUTE_MATCHED))
            | ((unstable["strategy"] == baseline) & (unstable["rung"] == full_rung) & (unstable["kind"] == LADDER))).any())
        rows.append({"strategy": strategy, "versus": baseline, "endpoint": primary.key, "label": primary.label,
                     "steps": steps, "samples": samples, "paper_share": samples / paper_samples,
                     "versus_steps": full_rung,
                     "versus_samples": int(base["samples"].iloc[0]) if len(base) else math.nan,
                     "step_fraction": steps / full_rung, "mean": float(np.mean(a)),
                     "mean_versus": float(np.mean(b)) if b else math.nan,
                     **{k: v for k, v in change.items() if k in ("estimate", "ci_low", "ci_high", "confidence",
                                                                  "eq_low", "eq_high", "eq_confidence", "p", "n_a",
                                                                  "n_b", "outcome")},
                     "informative": every_run_informative(a + b, _entry_mean(primary.key, trivial or {})) and bool(b),
                     "unstable": blown})
    columns = ["strategy", "versus", "endpoint", "label", "steps", "samples", "paper_share", "versus_steps",
               "versus_samples", "step_fraction", "mean", "mean_versus", "estimate", "ci_low", "ci_high",
               "confidence", "eq_low", "eq_high", "eq_confidence", "p", "n_a", "n_b", "outcome", "informative",
               "unstable"]
    table = pd.DataFrame(rows, columns=columns)
    return blank_unstable(table, table["unstable"].astype(bool).tolist())


def rung_instability(rungs: Sequence[Mapping[str, Any]], rule: InstabilityRule) -> pd.DataFrame:
    """One row per rung model whose own curve is unstable (:class:`~diffusion_lib.analysis.instability.InstabilityRule`):
    ``strategy``, ``seed``, ``rung``, ``kind`` and the first unstable evaluation's fields."""
    rows = []
    for r in rungs:
        if not Path(r["curve"]).exists():
            continue
        hit = rule.curve(pd.read_csv(r["curve"]))
        if hit is not None:
            rows.append({"strategy": r["strategy"], "seed": int(r["seed"]), "rung": int(r["rung"]), "kind": r["kind"],
                         **hit})
    columns = ["strategy", "seed", "rung", "kind", "step", "value", "best", "best_step", "ratio"]
    return pd.DataFrame(rows, columns=columns).drop_duplicates(["strategy", "seed", "rung", "kind"])


def unstable_rungs(unstable: pd.DataFrame, strategies: Sequence[str]) -> list[int]:
    """The ladder rungs at which a run of any of ``strategies`` is unstable."""
    hit = unstable[(unstable["kind"] == LADDER) & unstable["strategy"].isin(list(strategies))]
    return sorted({int(r) for r in hit["rung"]})
