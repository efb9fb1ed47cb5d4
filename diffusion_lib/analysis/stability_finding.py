"""The stability study's answer: its declared tests, what its controls say, and the sentence that
reports it (issue 44; the design: docs/stability-design.md; config ``comparison.stability``).

The statistics are :mod:`diffusion_lib.analysis.survival`'s (times to instability with censoring,
Kaplan-Meier, the exact log-rank test, Clopper-Pearson); here they are put to the study's design:

* every run of the study gets its time to instability (:func:`run_table`), grouped by *arm* and
  learning rate (:func:`diffusion_lib.plan.config.strategy_arms`), so a learning-rate grid reads as
  one arm at several rates;
* per arm and rate: the share of runs that became unstable with its exact 95% interval and the
  median time, and, descriptive, how far the unstable runs rose and whether they came back
  (:func:`shares_table`), the Kaplan-Meier curves (:func:`km_table`) and the stable range
  (:func:`~diffusion_lib.analysis.survival.stable_range`);
* the declared tests (:class:`StabilityDesign`): the **primary** pair, tested alone at ``alpha``;
  the **secondary** family (the declared pairs, then each control against both groups of the primary
  pair), Holm-corrected together at ``alpha``. The p-value is the exact permutation one;
* each control is read by the declared rule (:func:`readings`): *like the first* group of the
  primary pair when it differs from the second and not from the first, *like the second* when it
  differs from the first and not from the second, *differs from both* (on either side of the first
  group, said which) when it differs from both, else
  *not told apart*; the config's sentence for that reading is what the report says it means, and only
  where the primary test found the first group unstable sooner (otherwise there is nothing for a
  control to explain, and the reading is reported without its meaning);
* :func:`finding`: the sentence, only as strong as the primary test, with its budget.

Nothing here decides the accuracy verdict, and no test here uses a problem as a replicate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .instability import InstabilityRule
from .statistics import holm, p_text
from .survival import RunTime, clopper_pearson, kaplan_meier, log_rank, run_times, stable_range

FIRST, SECOND, BOTH, APART = "first", "second", "both", "not told apart"


@dataclass(frozen=True)
class StabilityDesign:
    """``comparison.stability``: the primary pair, the declared secondary pairs, the controls with
    what each reading would mean (``like_first`` / ``like_second``), and the error rate."""

    primary: tuple[str, str]
    secondary: tuple[tuple[str, str], ...] = ()
    controls: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    alpha: float = 0.05

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None, alpha: float = 0.05) -> "StabilityDesign | None":
        """The design, or None where the config declares none."""
        if not cfg:
            return None
        return cls(tuple(cfg["primary"]), tuple(tuple(p) for p in cfg.get("secondary") or ()),
                   dict(cfg.get("controls") or {}), alpha)

    def family(self) -> list[tuple[str, str]]:
        """The secondary family in order: the declared pairs, then each control against the primary
        pair's second group and first group."""
        first, second = self.primary
        pairs = [tuple(p) for p in self.secondary]
        for control in self.controls:
            pairs += [(control, second), (control, first)]
        return list(dict.fromkeys(pairs))

    def strategies(self) -> list[str]:
        """Every group the design names."""
        return list(dict.fromkeys([*self.primary, *(s for p in self.family() for s in p)]))


def run_table(curves: pd.DataFrame, rule: InstabilityRule, groups: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """One row per run: ``strategy``, ``arm``, ``lr``, ``seed``, ``time`` (the step of instability,
    or of its last evaluation when censored), ``event`` (it became unstable), ``watched_to`` (its
    last evaluation), ``peak`` and ``end_ratio`` (how far it rose and where it ended, each over its
    best: :meth:`~diffusion_lib.analysis.instability.InstabilityRule.excursion`)."""
    rows = [{"strategy": strategy, **r.__dict__} for strategy, (arm, lr) in groups.items()
            for r in run_times(curves[curves["strategy"] == strategy], rule, {strategy: (str(arm), float(lr))})]
    columns = ["strategy", "arm", "lr", "seed", "time", "event", "watched_to", "peak", "end_ratio"]
    return pd.DataFrame(rows, columns=columns).sort_values(["arm", "lr", "seed"], ignore_index=True)


def _times(runs: pd.DataFrame) -> list[RunTime]:
    return [RunTime(r.arm, float(r.lr), int(r.seed), int(r.time), bool(r.event)) for r in runs.itertuples()]


def _median_time(km: pd.DataFrame) -> float:
    below = km[km["stable"] <= 0.5]
    return float(below["step"].iloc[0]) if len(below) else math.nan


def shares_table(runs: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Per arm and learning rate: runs, unstable runs, their share with its exact 95% interval, the
    median time to instability (NaN while more than half stayed stable) and the first unstable step;
    and, descriptive, of the unstable runs: the median ``peak`` (how far over its best so far a run
    rose) and how many were ``back`` within ``factor`` × their best at their last evaluation (a
    blow-up the run recovered from, against one it ended in; NaN where a run's end is not known)."""
    rows = []
    for (arm, lr), d in runs.groupby(["arm", "lr"], sort=True):
        k, n = int(d["event"].sum()), len(d)
        low, high = clopper_pearson(k, n)
        km = kaplan_meier(d["time"].tolist(), d["event"].tolist())
        rows.append({"arm": arm, "lr": float(lr), "strategy": d["strategy"].iloc[0], "runs": n, "unstable": k,
                     "share": k / n, "ci_low": low, "ci_high": high, "median_time": _median_time(km),
                     "first_unstable": float(d.loc[d["event"], "time"].min()) if k else math.nan,
                     "watched_to": int(d["watched_to"].max()),
                     "peak_median": float(d.loc[d["event"], "peak"].median()) if k else math.nan,
                     "back": _back(d.loc[d["event"], "end_ratio"], factor)})
    return pd.DataFrame(rows, columns=["arm", "lr", "strategy", "runs", "unstable", "share", "ci_low", "ci_high",
                                       "median_time", "first_unstable", "watched_to", "peak_median", "back"])


def _back(ends: pd.Series, factor: float) -> float:
    """How many of these unstable runs ended within ``factor`` × their best (NaN unless every end is known)."""
    return float((ends <= factor).sum()) if len(ends) and ends.notna().all() else math.nan


def km_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Each arm's and learning rate's Kaplan-Meier curve, starting at 1 at step 0 and ending at the
    last step a run was watched (the curve a figure draws as steps)."""
    frames = []
    for (arm, lr), d in runs.groupby(["arm", "lr"], sort=True):
        km = kaplan_meier(d["time"].tolist(), d["event"].tolist())
        start = pd.DataFrame([{"step": 0, "at_risk": len(d), "events": 0, "stable": 1.0, "ci_low": 1.0, "ci_high": 1.0}])
        end = km.iloc[[-1]] if len(km) else start
        still = int((~d["event"].astype(bool)).sum())  # censored runs: still stable when last watched
        last = end.assign(step=int(d["watched_to"].max()), events=0, at_risk=still)
        frames.append(pd.concat([start, km, last], ignore_index=True).assign(arm=arm, lr=float(lr),
                                                                              strategy=d["strategy"].iloc[0]))
    columns = ["arm", "lr", "strategy", "step", "at_risk", "events", "stable", "ci_low", "ci_high"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def tests_table(runs: pd.DataFrame, design: StabilityDesign) -> pd.DataFrame:
    """The declared tests, one row each: ``role`` (primary / secondary), the two groups, their runs
    and unstable runs, the log-rank ``observed`` / ``expected`` events of the first, ``chi2``, the exact
    ``p``, ``p_holm`` (the secondary family; the primary's own p) and ``differs`` (adjusted p < alpha).
    A pair with a group that has no runs is listed with NaN."""
    rows = []
    pairs = [("primary", design.primary)] + [("secondary", p) for p in design.family()]
    for role, (a, b) in pairs:
        ra, rb = runs[runs["strategy"] == a], runs[runs["strategy"] == b]
        row = {"role": role, "a": a, "b": b, "n_a": len(ra), "n_b": len(rb), "unstable_a": int(ra["event"].sum()),
               "unstable_b": int(rb["event"].sum())}
        if len(ra) and len(rb):
            test = log_rank(_times(ra), _times(rb))
            row.update({"observed": test["observed"], "expected": test["expected"], "chi2": test["chi2"],
                        "p": test["p_exact"], "p_chi2": test["p"], "splits": test["splits"]})
        rows.append(row)
    columns = ["role", "a", "b", "n_a", "n_b", "unstable_a", "unstable_b", "observed", "expected", "chi2", "p",
               "p_chi2", "splits"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    secondary = table["role"] == "secondary"
    table["p_holm"] = table["p"]
    table.loc[secondary, "p_holm"] = holm(table.loc[secondary, "p"].tolist()) if secondary.any() else []
    table["differs"] = [bool(p < design.alpha) if math.isfinite(p) else None for p in table["p_holm"]]
    return table


def _differs(tests: pd.DataFrame, a: str, b: str) -> bool | None:
    row = tests[(tests["a"] == a) & (tests["b"] == b)]
    if row.empty or not math.isfinite(row["p_holm"].iloc[0]):
        return None
    return bool(row["differs"].iloc[0])


def _primary_holds(tests: pd.DataFrame) -> bool:
    """Whether the primary test found the first group unstable sooner than the second."""
    row = tests[tests["role"] == "primary"].iloc[0]
    return bool(row["differs"]) and row["observed"] > row["expected"]


def _both(tests: pd.DataFrame, control: str, first: str, second: str) -> str:
    """What a control that differs from both groups did: which side of the first group it fell on."""
    row = tests[(tests["a"] == control) & (tests["b"] == first)].iloc[0]
    if row["observed"] > row["expected"]:
        return f"its runs became unstable even sooner than the {first} runs"
    return f"its runs stayed stable longer than the {first} runs, not as long as the {second} runs"


def readings(tests: pd.DataFrame, design: StabilityDesign) -> list[dict[str, Any]]:
    """Each control's reading by the declared rule and the sentence the config gives it; the sentence
    only where the primary test found the first group unstable sooner."""
    first, second = design.primary
    holds = _primary_holds(tests)
    out = []
    for control, meaning in design.controls.items():
        vs_first, vs_second = _differs(tests, control, first), _differs(tests, control, second)
        empty = [g for g in (control, first, second)
                 if not len(tests[((tests["a"] == g) & (tests["n_a"] > 0)) | ((tests["b"] == g) & (tests["n_b"] > 0))])]
        if vs_first is None or vs_second is None:
            like, text = None, f"not read: no runs of {', '.join(empty) or 'a compared group'}"
        else:
            like = {(False, True): FIRST, (True, False): SECOND, (True, True): BOTH}.get((vs_first, vs_second), APART)
            text = {FIRST: meaning.get("like_first", ""), SECOND: meaning.get("like_second", ""),
                    BOTH: meaning.get("both", _both(tests, control, first, second)),
                    APART: meaning.get("apart", f"the runs do not tell it apart from {first} or {second}")}[like]
            if not holds:
                text = (f"not interpreted: the primary test did not find {first} unstable sooner than {second}, "
                        "so there is nothing for this control to explain")
        out.append({"control": control, "like": like, "differs_from_first": vs_first,
                    "differs_from_second": vs_second, "means": text})
    return out


def _count(tests_row: Mapping[str, Any], side: str) -> str:
    return f"{int(tests_row[f'unstable_{side}'])} of {int(tests_row[f'n_{side}'])}"


def finding(runs: pd.DataFrame, ranges: pd.DataFrame, tests: pd.DataFrame, design: StabilityDesign,
            budget: str) -> dict[str, Any]:
    """The primary test's sentence (worded only as strongly as its p-value allows; ``budget`` says at
    what training it holds), the controls' readings and each arm's stable range (``ranges``:
    :func:`~diffusion_lib.analysis.survival.stable_range` of ``runs``)."""
    primary = tests[tests["role"] == "primary"].iloc[0].to_dict()
    a, b = design.primary
    counts = f"{_count(primary, 'a')} {a} runs and {_count(primary, 'b')} {b} runs became unstable"
    if not math.isfinite(primary.get("p", math.nan)):
        sentence = f"Not tested: the primary pair {a} / {b} has no runs of one group ({budget})."
        outcome = "not tested"
    elif primary["differs"]:
        sooner = a if primary["observed"] > primary["expected"] else b
        later = b if sooner == a else a
        outcome = f"{sooner} unstable sooner"
        sentence = (f"{budget}: {counts}; the {sooner} runs became unstable sooner than the {later} runs (exact "
                    f"log-rank test, the run as the unit, p = {p_text(primary['p'])}, α = {design.alpha:g}).")
    else:
        outcome = "not told apart"
        sentence = (f"{budget}: {counts}; the test does not tell the two apart (exact log-rank test, the run as "
                    f"the unit, p = {p_text(primary['p'])}, α = {design.alpha:g}).")
    return {"outcome": outcome, "sentence": sentence, "primary": primary, "readings": readings(tests, design),
            "stable_range": _ranges(runs, ranges), "alpha": design.alpha, "groups": design.strategies()}


def _ranges(runs: pd.DataFrame, ranges: pd.DataFrame) -> list[dict[str, Any]]:
    """Each arm's stable range with the rates it was tried at, for arms tried at two rates or more
    (one rate says nothing about a range)."""
    if runs.empty:
        return []
    tried = runs.groupby("arm")["lr"].apply(lambda s: sorted(set(map(float, s))))
    return [{**r, "rates": tried[r["arm"]]} for r in ranges.replace({np.nan: None}).to_dict("records")
            if len(tried[r["arm"]]) > 1]


def analyse_stability(curves: pd.DataFrame, rule: InstabilityRule, groups: Mapping[str, Sequence[Any]],
                      design: StabilityDesign | None, budget: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The stability tables (``stability_runs``, ``stability_shares``, ``stability_km``,
    ``stability_tests``, ``stability_range``) and, with a declared design, its finding (else {})."""
    runs = run_table(curves, rule, groups)
    tables = {"stability_runs": runs, "stability_shares": shares_table(runs, rule.factor), "stability_km": km_table(runs),
              "stability_range": stable_range(_times(runs)) if len(runs) else pd.DataFrame(
                  columns=["arm", "largest_stable_lr", "smallest_unstable_lr", "runs_at_largest", "risk_upper_95"])}
    if design is None:
        tables["stability_tests"] = pd.DataFrame(columns=["role", "a", "b", "p", "p_holm", "differs"])
        return tables, {}
    tables["stability_tests"] = tests = tests_table(runs, design)
    return tables, finding(runs, tables["stability_range"], tests, design, budget)
