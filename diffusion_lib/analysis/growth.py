"""Growing the budget ladder until the answer stops moving (SPEC §8.1, ``comparison.ladder.until_stable``).

A *look* reads the ladder as it stands, its largest rung ``top``, and decides whether to add a rung at
twice ``top``: the trunk continues from its last saved state, a new decay branch is trained and
evaluated, and the next look reads the longer ladder. The rule reads the gap's stability only, never
where a confidence interval lies relative to 0 or ±delta:

* a compared run unstable at ``top`` (:mod:`diffusion_lib.analysis.instability`): stop; more training of a run
  that blew up answers nothing, and the verdict says "training unstable";
* every verdict arm's gap stable (:class:`~diffusion_lib.analysis.stability.GapStability`): stop, *stable*;
* an arm whose gap still moves, or that has fewer than two informative rungs: grow, unless twice
  ``top`` exceeds ``max_steps`` (stop, *maximum budget reached*);
* anything else (too few seeds to estimate the change): stop; more budget would not make it
  assessable.

The workflow asks one look per ladder top as a Snakemake checkpoint (``workflow/rules/ladder.smk``),
so the whole growth happens in one ``snakemake`` invocation and a dry run shows which rungs exist and
why each was added (:func:`describe_looks`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .stability import GapStability

STABLE, MAX_BUDGET, UNSTABLE, UNASSESSABLE = "stable", "maximum budget reached", "training unstable", "not assessable"


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
        """Each verdict arm's gap in a few words: stable, still moving, or how many informative rungs."""
        def state(arm: Mapping[str, Any]) -> str:
            usable = len(arm.get("usable_rungs", ()))
            if arm.get("stable"):
                return "stable"
            return "still moving" if usable >= 2 else f"{usable} informative rung{'' if usable == 1 else 's'}"
        return ", ".join(f"{s} {state(a)}" for s, a in self.arms.items())

    def sentence(self) -> str:
        """What this look decided, in one line (dry runs and the report; the reasons in full are in
        the look's file)."""
        standing = f" ({self.standing()})" if self.arms else ""
        if self.grow:
            return f"at {self.top:,} steps{standing}: added the rung of {self.next:,} steps"
        if self.stopped == UNSTABLE:
            return f"at {self.top:,} steps: stopped, {self.stopped} ({'; '.join(self.reasons)})"
        return f"at {self.top:,} steps{standing}: stopped, {self.stopped}"


def decide_look(top: int, next_budget: int | None, stabilities: Mapping[str, GapStability],
                unstable_at_top: Sequence[str] = ()) -> Look:
    """The look at ladder top ``top`` (see the module docstring). ``next_budget``: the rung it would
    add (None when twice ``top`` exceeds ``max_steps``); ``stabilities``: each verdict arm's gap
    stability over the ladder up to ``top``; ``unstable_at_top``: the compared runs unstable at
    ``top``, described."""
    arms = {s: {"stable": g.stable, "usable_rungs": [g.steps[i] for i in g.usable], "reason": g.ladder_reason()}
            for s, g in stabilities.items()}
    if unstable_at_top:
        return Look(top, next_budget, False, UNSTABLE, tuple(unstable_at_top), arms)
    if not stabilities:
        return Look(top, next_budget, False, UNASSESSABLE, ("no mining arm to compare with the baseline",), arms)
    pending = {s: g for s, g in stabilities.items() if not g.stable}
    if not pending:
        return Look(top, next_budget, False, STABLE, (), arms)
    reasons = tuple(g.ladder_reason() for g in pending.values())
    if any(len(g.usable) >= 2 and not g.assessable for g in pending.values()):
        return Look(top, next_budget, False, UNASSESSABLE, reasons, arms)
    if next_budget is None:
        return Look(top, None, False, MAX_BUDGET, reasons, arms)
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
