"""The ablation table of a study's sweeps (exploratory): each grid point's test MSE, and the gap
between bases at the same swept value.

A sweep point is a strategy built from a base strategy with some parameters set (``sweep_points``:
strategy → ``{"base": name, parameter: value, ...}``, parameters keyed as in the config's grid, so
``opt_steps`` or ``train.grad_clip``). One parameter may be swept from several bases (the recipe
sweeps vary ``train.grad_clip`` and ``train.lr`` for the baseline and for the adversarial arm).

The table has two kinds of rows (column ``kind``):

* ``arm``: one per (swept strategy, parameter, test set): mean and Student-t 95% CI over seeds of the
  test MSE at the default inference inner steps, with the numbers of runs, completed seeds and
  diverged runs (a grid point whose runs all diverged still has its rows, with no MSE);
* ``gap``: one per (parameter, value, base other than the baseline): the relative change of the
  primary endpoint of that base's grid point versus the baseline's grid point at the *same* value
  (:func:`statistics.relative_change_ci`, seeds as the unit; exploratory, no multiplicity
  correction). For a mining parameter, which the baseline does not use, the baseline strategy itself
  is the comparator at every value. This answers "is the pilot's answer the method or the recipe":
  if the gap moves with a recipe value, the answer is about the recipe.

Values survive a CSV round trip: pandas writes ``inf`` and reads it back as a float;
:func:`parse_value` also reads a value that came back as text.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pandas as pd

from ..settings.names import SWEEP_TRAIN_PREFIX, format_value
from .statistics import judged_change, summarize
from .tables import Endpoint, endpoint_values

ARM, GAP = "arm", "gap"
COLUMNS = ["kind", "base", "parameter", "value", "value_label", "strategy", "versus", "set", "endpoint", "label",
           "mse_mean", "mse_ci_low", "mse_ci_high", "seeds", "runs", "diverged", "estimate", "ci_low", "ci_high",
           "confidence", "p", "n_a", "n_b", "outcome", "others"]
#: what an infinite value of a parameter means, by the parameter's short name
INFINITE_MEANS = {"grad_clip": "no clipping"}


# --------------------------------------------------------------------------- values
def parse_value(value: Any) -> Any:
    """A sweep value as read back from a CSV: numbers (also ``"inf"`` and ``"1.0"`` as text) become
    floats, anything else is kept as it is."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return value


def short_name(parameter: str) -> str:
    """The parameter without its ``train.`` prefix (``train.grad_clip`` → ``grad_clip``)."""
    return parameter.removeprefix(SWEEP_TRAIN_PREFIX)


def value_label(parameter: str, value: Any) -> str:
    """Display text of a swept value: ``4`` for 4.0, ``0.0005``, and ``∞`` for an infinite value with
    its meaning where known (``∞ (no clipping)`` for ``grad_clip``)."""
    value = parse_value(value)
    if isinstance(value, float) and math.isinf(value):
        means = INFINITE_MEANS.get(short_name(parameter))
        sign = "−" if value < 0 else ""
        return f"{sign}∞ ({means})" if means and value > 0 else f"{sign}∞"
    return format_value(value)


def value_key(value: Any) -> str:
    """Identity of a swept value, equal for 1, 1.0 and ``"1.0"`` (how grid points of two bases are paired)."""
    return format_value(parse_value(value))


def ordered_values(values: Iterable[Any]) -> list[Any]:
    """Distinct values in axis order: numbers ascending (∞ last), then any text values as first seen."""
    distinct = {value_key(v): parse_value(v) for v in values if not _missing(v)}
    numbers = sorted(v for v in distinct.values() if isinstance(v, float))
    return [*numbers, *(v for v in distinct.values() if not isinstance(v, float))]


def _missing(value: Any) -> bool:
    """An absent value (None, or NaN from an empty CSV cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def override_text(strategy: str, point: Mapping[str, Any]) -> str:
    """``adversarial, grad_clip = ∞ (no clipping)``: a swept strategy's base and its swept values."""
    values = [f"{short_name(k)} = {value_label(k, v)}" for k, v in point.items() if k != "base"]
    text = ", ".join([str(point.get("base", strategy)), *values])
    return text + (" (the base itself: these grid points are its runs)" if strategy == point.get("base") else "")


def points_from_table(ablation: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The sweep points (strategy → base and swept values) recorded in an ablation table's arm rows."""
    points: dict[str, dict[str, Any]] = {}
    if ablation.empty:
        return points
    arms = ablation[ablation["kind"] == ARM] if "kind" in ablation else ablation
    for r in arms.drop_duplicates(["strategy", "parameter"]).itertuples(index=False):
        points.setdefault(r.strategy, {"base": r.base})[r.parameter] = parse_value(r.value)
    return points


# --------------------------------------------------------------------------- the table
def _arm_rows(runs: pd.DataFrame, name: str, point: Mapping[str, Any], default_inner: int) -> list[dict[str, Any]]:
    """Rows of one swept strategy: per swept parameter and test set, MSE over seeds and run counts."""
    per_run = runs[runs["strategy"] == name].drop_duplicates(["strategy", "seed"])
    counts = {"runs": len(per_run), "diverged": int((per_run["status"] == "diverged").sum())}
    ok = runs[(runs["strategy"] == name) & (runs["status"] == "completed") & (runs["inner_steps"] == default_inner)]
    sets = list(dict.fromkeys(runs["set"].dropna())) or [None]
    rows = []
    for param, value in point.items():
        if param == "base":
            continue
        others = ", ".join(f"{k}={format_value(v)}" for k, v in point.items() if k not in ("base", param))
        for set_name in sets:
            s = summarize(ok.loc[ok["set"] == set_name, "mse"].tolist())
            rows.append({"kind": ARM, "base": point["base"], "parameter": param, "value": value,
                         "value_label": value_label(param, value), "strategy": name, "set": set_name,
                         "mse_mean": s["mean"], "mse_ci_low": s["ci_low"], "mse_ci_high": s["ci_high"],
                         "seeds": s["n"], **counts, "others": others})
    return rows


def _gap_rows(arms: pd.DataFrame, values: pd.DataFrame, baseline: str, primary: Endpoint, confidence: float,
              delta: float | None) -> list[dict[str, Any]]:
    """Each non-baseline base's grid point versus the baseline's at the same value, on ``primary``."""
    rows = []
    points = arms.drop_duplicates(["strategy", "parameter"])
    for param, g in points.groupby("parameter", sort=False):
        at = {(r.base, value_key(r.value)): r.strategy for r in g.itertuples(index=False)}
        swept_baseline = baseline in set(g["base"])
        for r in g[g["base"] != baseline].itertuples(index=False):
            versus = at.get((baseline, value_key(r.value))) if swept_baseline else (
                baseline if not param.startswith(SWEEP_TRAIN_PREFIX) else None)
            if versus is None:
                continue
            a = values.loc[values["strategy"] == r.strategy, "value"].tolist()
            b = values.loc[values["strategy"] == versus, "value"].tolist()
            change = judged_change(a, b, delta if delta is not None else math.nan, confidence)
            rows.append({"kind": GAP, "base": r.base, "parameter": param, "value": r.value,
                         "value_label": r.value_label, "strategy": r.strategy, "versus": versus, "set": primary.set,
                         "endpoint": primary.key, "label": primary.label,
                         "mse_mean": float(pd.Series(a, dtype=float).mean()) if a else math.nan, "seeds": len(a),
                         **{k: v for k, v in change.items() if k not in ("df", "se_log", "outcome")},
                         "outcome": change["outcome"] if delta is not None else None,
                         "others": r.others})
    return rows


def ablation_table(runs: pd.DataFrame, sweep_points: Mapping[str, Mapping[str, Any]], default_inner: int,
                   baseline: str | None = None, primary: Endpoint | None = None, confidence: float = 0.95,
                   delta: float | None = None) -> pd.DataFrame:
    """Arm rows of every swept strategy, then gap rows versus ``baseline`` on the ``primary``
    endpoint (default: ID test MSE of the EMA model at ``default_inner`` steps) at ``confidence``;
    ``delta`` classifies each gap's CI (see the module docstring). Without ``baseline``, no gaps."""
    rows = [row for name, point in sweep_points.items() for row in _arm_rows(runs, name, point, default_inner)]
    arms = pd.DataFrame(rows, columns=COLUMNS)
    if baseline is not None and len(arms):
        primary = primary or Endpoint("test_id", default_inner)
        values = endpoint_values(runs, [primary]) if len(runs) else pd.DataFrame(columns=["strategy", "value"])
        rows += _gap_rows(arms, values, baseline, primary, confidence, delta)
    return _in_order(pd.DataFrame(rows, columns=COLUMNS))


def _in_order(table: pd.DataFrame) -> pd.DataFrame:
    """Arm rows before gap rows; within each, by parameter (as first swept), value (axis order), base
    (as first seen) and set."""
    first = {c: {v: i for i, v in enumerate(dict.fromkeys(table[c]))} for c in ("parameter", "base")}
    rank = {p: {value_key(v): i for i, v in enumerate(ordered_values(g))}
            for p, g in table.groupby("parameter", sort=False)["value"]}
    keys = pd.DataFrame({"kind": (table["kind"] == GAP).astype(int),
                         "parameter": table["parameter"].map(first["parameter"]),
                         "value": [rank[p].get(value_key(v), -1) for p, v in zip(table["parameter"], table["value"])],
                         "base": table["base"].map(first["base"]), "set": table["set"].astype(str)},
                        index=table.index)
    return table.loc[keys.sort_values(list(keys.columns), kind="stable").index].reset_index(drop=True)
