"""Growing the budget ladder until the answer stops moving (method §8.1, ``comparison.ladder.until_stable``).

A *look* reads the ladder as it stands, its largest rung ``top``, and decides whether to add a rung at
twice ``top``: the trunk continues from its last saved state, a new decay branch is trained and
evaluated, and the next look reads the longer ladder. The rule reads **validation data only**
(never the test set: each rung's last validation MSE and the trunk's validation curve,
:func:`validation_rungs`), uses the **same per-doubling criterion at every look** (both trend
readings of :mod:`diffusion_lib.analysis.trend` with their CIs within ±delta/2 per doubling), and never
reads where a confidence interval lies relative to 0 or ±delta:

* a compared run unstable at ``top`` (:mod:`diffusion_lib.analysis.instability`): stop; more training of a run
  that blew up answers nothing, and the verdict says "training unstable";
* every verdict arm's trend flat by that criterion: stop, *trend flat*;
* otherwise grow, unless twice ``top`` exceeds ``max_steps`` (stop, *maximum budget reached*), or
  the new rung's trunk would pass half of the longest constant-lr trunk seen stable for every arm
  (``stability_margin``; stop, *stability margin reached*), or no such length was measured (stop,
  *stability not measured*: run a stability sweep first).

The workflow asks one look per ladder top as a Snakemake checkpoint (``workflow/rules/ladder.smk``),
so the whole growth happens in one ``snakemake`` invocation and a dry run shows which rungs exist and
why each was added (:func:`describe_looks`). The verdict's CIs are adjusted for the number of looks
(Bonferroni, :meth:`diffusion_lib.analysis.study.Comparison.confidence`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from .ladder_tables import LADDER, every_run_informative
from .trend import rung_trend, trunk_trend

STABLE, MAX_BUDGET, UNSTABLE, UNASSESSABLE = "trend flat", "maximum budget reached", "training unstable", "not assessable"
MARGIN, UNMEASURED = "stability margin reached", "stability not measured"


@dataclass(frozen=True)
class Look:
    """One look at the ladder whose largest rung is ``top`` steps: whether to add ``next`` (``grow``),
    else why the ladder stops there (``stopped``), with each arm's reason."""

    top: int
    next: int | None
    grow: bool
    stopped: str
    reasons: tuple[str, ...] = ()
    arms: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons), "arms": dict(self.arms)}

    def standing(self) -> str:
        """Each verdict arm's gap in a few words: flat, or still moving."""
        return ", ".join(f"{s} {'flat' if a.get('final') else 'still moving'}" for s, a in self.arms.items())

    def sentence(self) -> str:
        """What this look decided, in one line (dry runs and the report; the reasons in full are in
        the look's file)."""
        standing = f" ({self.standing()})" if self.arms else ""
        if self.grow:
            return f"at {self.top:,} steps{standing}: added the rung of {self.next:,} steps"
        if self.stopped in (UNSTABLE, MARGIN, UNMEASURED):
            return f"at {self.top:,} steps{standing}: stopped, {self.stopped} ({'; '.join(self.reasons)})"
        return f"at {self.top:,} steps{standing}: stopped, {self.stopped}"


def _last_validation(curve: str, metric: str) -> float:
    c = pd.read_csv(curve)
    v = c[metric].dropna() if metric in c else pd.Series(dtype=float)
    return float(v.iloc[-1]) if len(v) else float("nan")


def validation_rungs(rungs: Sequence[Mapping[str, Any]], comparison: Any, trivial: Mapping[str, Mapping[str, float]],
                     top: int, trunk_until: int | None = None) -> dict[str, dict[str, Any]]:
    """Each verdict arm's trend on validation data over the ladder up to ``top`` (``rungs``: the rung
    index entries, their ``curve`` files only): each rung model's last validation MSE (EMA model)
    gives the rung reading over the informative rungs (every run of both arms with validation skill
    ≥ 5%), the largest rung's curve up to ``trunk_until`` the trunk reading. ``final``: both CIs lie
    within ±delta/2 per doubling."""
    metric = comparison.convergence.metric
    entry = float(trivial.get(comparison.primary_set, {}).get("entry_mean", float("nan")))
    ladder = [r for r in rungs if r["kind"] == LADDER and int(r["rung"]) <= top]
    values = pd.DataFrame([{"strategy": r["strategy"], "seed": int(r["seed"]), "rung": int(r["rung"]),
                            "value": _last_validation(r["curve"], metric)} for r in ladder],
                          columns=["strategy", "seed", "rung", "value"])
    curves = pd.concat([pd.read_csv(r["curve"]).assign(strategy=r["strategy"], seed=int(r["seed"]))
                        for r in ladder if int(r["rung"]) == top] or [pd.DataFrame()], ignore_index=True)
    present = set(values["strategy"])
    base, tolerance = comparison.baseline, comparison.delta / 2
    out = {}
    for arm in (comparison.adversarial, comparison.random):
        if arm is None or arm not in present or base not in present:
            continue
        both = values[values["strategy"].isin([arm, base])]
        usable = [int(r) for r, g in both.groupby("rung")
                  if g["strategy"].nunique() == 2 and every_run_informative(g["value"], entry)]
        trends = [rung_trend(both, arm, base, usable), trunk_trend(curves, arm, base, entry, trunk_until, metric)]
        flat = all(t.within(tolerance) for t in trends)
        out[arm] = {"final": flat, "usable_rungs": usable,
                    "reason": "" if flat else "; ".join(f"{t.source} trend {t.text()}" for t in trends
                                                        if not t.within(tolerance)),
                    "trends": [t.as_dict() for t in trends]}
    return out


def decide_look(top: int, next_budget: int | None, arms: Mapping[str, Mapping[str, Any]],
                unstable_at_top: Sequence[str] = (), margin: Mapping[str, Any] | None = None) -> Look:
    """The look at ladder top ``top`` (see the module docstring). ``next_budget``: the rung it would
    add (None when twice ``top`` exceeds ``max_steps``); ``arms``: each verdict arm's validation trend
    (:func:`validation_rungs`); ``unstable_at_top``: the compared runs unstable at ``top``, described;
    ``margin``: ``next_trunk`` (the branch point of the rung it would add) and ``seen_stable`` (the
    shortest of the longest constant-lr trunks seen stable per arm; None when not measured)."""
    arms = {s: dict(a) for s, a in arms.items()}
    if unstable_at_top:
        return Look(top, next_budget, False, UNSTABLE, tuple(unstable_at_top), arms)
    if not arms:
        return Look(top, next_budget, False, UNASSESSABLE, ("no mining arm to compare with the baseline",), arms)
    pending = {s: a for s, a in arms.items() if not a.get("final")}
    if not pending:
        return Look(top, next_budget, False, STABLE, (), arms)
    reasons = tuple(f"{s}: {a.get('reason', '')}" for s, a in pending.items())
    if next_budget is None:
        return Look(top, None, False, MAX_BUDGET, reasons, arms)
    margin = margin or {}
    seen, trunk = margin.get("seen_stable"), margin.get("next_trunk")
    if seen is None:
        return Look(top, next_budget, False, UNMEASURED, reasons + (
            "no stable trunk length was measured for every arm (stability_margin.seen_stable): run a stability "
            "sweep before growing the ladder",), arms)
    if trunk is not None and trunk > seen / 2:
        return Look(top, next_budget, False, MARGIN, reasons + (
            f"the rung of {next_budget:,} steps needs a trunk of {trunk:,} steps, past half of the {seen:,} seen "
            "stable",), arms)
    return Look(top, next_budget, True, "", reasons, arms)


def write_look(look: Look, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(look.as_dict(), indent=2) + "\n")


def read_look(path: str | Path) -> Look:
    return read_look_dict(json.loads(Path(path).read_text()))


def read_look_dict(data: Mapping[str, Any]) -> Look:
    return Look(int(data["top"]), data.get("next"), bool(data["grow"]), str(data.get("stopped", "")),
                tuple(data.get("reasons", ())), data.get("arms", {}))


def walk_looks(first: int, path_of: Callable[[int], str], read: Callable[[str], Look] = read_look) -> list[Look]:
    """The looks already taken, from the first (at ``first`` steps) on, following each that grew to the
    next; stops at the first look whose file is missing. ``read`` may raise to ask for a missing one
    (the workflow passes a reader that asks the checkpoint)."""
    looks: list[Look] = []
    top: int | None = first
    while top is not None:
        path = path_of(top)
        try:
            look = read(path)
        except FileNotFoundError:
            break
        looks.append(look)
        top = look.next if look.grow else None
    return looks


def final_top(first: int, looks: Iterable[Look]) -> int:
    """The ladder's largest rung after ``looks`` (``first`` without any): where the last look that
    grew pointed."""
    top = first
    for look in looks:
        if look.grow and look.next is not None:
            top = look.next
    return top


def describe_looks(looks: Sequence[Look], first: int, max_steps: int) -> str:
    """For a dry run and the report: how many rungs were looked at and why the ladder stopped (or that
    the next look is pending)."""
    head = f"The ladder grows until the answer stops moving (until_stable, max_steps {max_steps:,}): "
    if not looks:
        return head + f"no look yet (the first reads the ladder up to {first:,} steps once its rungs are evaluated)"
    head += f"{len(looks)} look{'s' if len(looks) > 1 else ''} at ladder tops {', '.join(f'{l.top:,}' for l in looks)} steps; "
    lines = [f"look {i + 1} {look.sentence()}" for i, look in enumerate(looks)]
    if looks[-1].grow:
        lines.append(f"look {len(looks) + 1} pending (once the rung of {looks[-1].next:,} steps is evaluated)")
    return head + "; ".join(lines)
