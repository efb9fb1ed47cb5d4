"""What a JSON schema cannot check in a study config: the semantic checks :func:`~diffusion_lib.plan.config.load_config` runs after schema validation, each problem naming its field."""
from __future__ import annotations

import math
from typing import Any, Mapping

from ..analysis.convergence import ConvergenceRule
from ..settings.ladder import LADDER_SCHEDULES, decay_fraction, grown_steps, on_grid
from ..settings.run_config import closed_form_mismatch
from ..settings.lr_schedule import decay_start
from ..settings.names import SWEEP_TRAIN_PREFIX


def _gradient_problems(where: str, train: Mapping[str, Any]) -> list[str]:
    """``gradients: closed_form`` with a network the closed form does not describe
    (:func:`diffusion_lib.settings.run_config.closed_form_mismatch`)."""
    why = closed_form_mismatch(train.get("gradients", "auto"), train.get("model") or {})
    return [] if why is None else [f"config field '{where}.gradients': {why} ('{where}.model')"]


def semantic_problems(cfg: dict[str, Any], explicit_roles: set[str]) -> list[str]:
    problems = []
    train, data = cfg["train"], cfg["data"]
    all_seeds = set(cfg["seeds"]).union(*(m.get("seeds", []) for m in cfg["strategies"].values()))
    if data["seed"] in all_seeds:
        problems.append(f"config field 'data.seed': {data['seed']} is also a training seed; held-out data "
                        "must come from a seed distinct from every training seed")
    if train["checkpoint_every"] % train["log_every"]:
        problems.append(f"config field 'train.checkpoint_every': {train['checkpoint_every']} must be a multiple "
                        f"of train.log_every ({train['log_every']})")
    if train["val_size"] > data["val_size"]:
        problems.append(f"config field 'train.val_size': {train['val_size']} exceeds data.val_size "
                        f"({data['val_size']}), the size of the validation set")
    problems += _number_problems("train", train) + _gradient_problems("train", train)
    strategies, comparison = cfg["strategies"], cfg["comparison"]
    for name, mining in strategies.items():
        problems += _number_problems(f"strategies.{name}.train", mining.get("train", {}))
    expected_mode = {"baseline": "none", "random": "random", "adversarial": "adversarial"}
    for role, mode in expected_mode.items():
        name = comparison[role]
        if name not in strategies:
            # the baseline is required; random/adversarial may be absent unless named explicitly
            if role == "baseline" or role in explicit_roles:
                problems.append(f"config field 'comparison.{role}': strategy {name!r} is not declared in "
                                f"'strategies' (declared: {sorted(strategies)})")
            continue
        if strategies[name]["mode"] != mode:
            problems.append(f"config field 'comparison.{role}': strategy {name!r} has mode "
                            f"{strategies[name]['mode']!r}, expected {mode!r}")
    problems += _ladder_problems(cfg)
    try:
        ConvergenceRule.from_mapping(comparison["convergence"])
    except ValueError as exc:
        problems.append(f"config field 'comparison.{exc}")
    primary_inner = comparison["primary"]["inner_steps"]
    scored = {0, cfg["evaluation"]["default_inner"], *cfg["evaluation"]["inner_steps"]}
    if primary_inner is not None and primary_inner not in scored:
        problems.append(f"config field 'comparison.primary.inner_steps': {primary_inner} is not scored by the "
                        f"evaluation (scored: {sorted(scored)}); add it to evaluation.inner_steps")
    for i, sweep in enumerate(cfg["sweeps"]):
        if sweep["base"] not in strategies:
            problems.append(f"config field 'sweeps.{i}.base': strategy {sweep['base']!r} is not declared "
                            f"(declared: {sorted(strategies)})")
        elif strategies[sweep["base"]]["mode"] == "none" and any(
                not key.startswith(SWEEP_TRAIN_PREFIX) for key in sweep["grid"]):
            problems.append(f"config field 'sweeps.{i}.base': strategy {sweep['base']!r} has mode 'none', "
                            "which uses no mining parameters to sweep (only train.* grid keys apply to it)")
        problems += _number_problems(f"sweeps.{i}.grid.train", {
            key[len(SWEEP_TRAIN_PREFIX):]: values for key, values in sweep["grid"].items()
            if key.startswith(SWEEP_TRAIN_PREFIX)})
    return problems


def stability_problems(design: Mapping[str, Any] | None, strategies: Mapping[str, Any]) -> list[str]:
    """``comparison.stability`` read against the expanded strategies (grid points included): every
    strategy it names is declared, each pair is two different strategies, no pair is tested twice
    (in either order), and a control is not one of the primary pair."""
    if not design:
        return []
    problems = []
    pairs = [("primary", tuple(design["primary"]))]
    pairs += [(f"secondary.{i}", tuple(p)) for i, p in enumerate(design.get("secondary", []))]
    for where, pair in pairs:
        problems += [f"config field 'comparison.stability.{where}': strategy {n!r} is not declared in 'strategies' "
                     f"(declared: {sorted(strategies)})" for n in pair if n not in strategies]
        if len(set(pair)) < 2:
            problems.append(f"config field 'comparison.stability.{where}': needs two different strategies, got {list(pair)}")
    controls = design.get("controls", {})
    problems += [f"config field 'comparison.stability.controls.{c}': strategy {c!r} is not declared in 'strategies' "
                 f"(declared: {sorted(strategies)})" for c in controls if c not in strategies]
    problems += [f"config field 'comparison.stability.controls.{c}': {c!r} is in the primary pair; a control is "
                 "read against it" for c in controls if c in design["primary"]]
    tested = [(w, frozenset(p)) for w, p in pairs]
    tested += [(f"controls.{c}", frozenset((c, s))) for c in controls for s in design["primary"] if c != s]
    seen: dict[frozenset, str] = {}
    for where, pair in tested:
        if pair in seen and len(pair) == 2:
            problems.append(f"config field 'comparison.stability.{where}': the pair {sorted(pair)} is already tested "
                            f"({seen[pair]})")
        seen.setdefault(pair, where)
    return problems


def _number_problems(field: str, block: Mapping[str, Any]) -> list[str]:
    """NaN and infinities a JSON schema lets through (NaN passes every bound): ``lr``, ``max_loss``
    and ``betas`` must be finite; ``grad_clip`` may be ``.inf`` (never clip), never NaN. A value
    may be a list (betas, or a sweep's grid values): each element is checked."""
    problems = []
    for key in ("lr", "max_loss", "betas", "grad_clip"):
        if key not in block:
            continue
        values = block[key] if isinstance(block[key], (list, tuple)) else [block[key]]
        if key == "grad_clip" and any(math.isnan(v) for v in values):
            problems.append(f"config field '{field}.{key}': must be a positive number or .inf (no clipping), "
                            f"got {block[key]}")
        elif key != "grad_clip" and not all(math.isfinite(v) for v in values):
            problems.append(f"config field '{field}.{key}': must be finite, got {block[key]}")
    return problems


def _ladder_problems(cfg: dict[str, Any]) -> list[str]:
    """The budget ladder must be trainable from one trunk: a wsd or constant schedule, the full
    budget's branch point on the log grid (smaller rungs are snapped onto it), and enough validation
    evaluations on the trunk for the plateau check."""
    train, rungs = cfg["train"], cfg["comparison"]["ladder"]["rungs"]
    kind = train["lr_schedule"]["kind"]
    if kind not in LADDER_SCHEDULES:
        if cfg["comparison"]["ladder"].get("until_stable") is not None:
            return [f"config field 'comparison.ladder.until_stable': needs train.lr_schedule.kind wsd or constant "
                    f"(a {kind!r} schedule has no constant trunk to continue)"]
        if any(r != 1 for r in rungs):
            return [f"config field 'comparison.ladder.rungs': {rungs} needs train.lr_schedule.kind wsd or constant "
                    f"(a {kind!r} schedule has no constant trunk to branch from); use rungs: [1.0]"]
        return []
    f = decay_fraction(train)
    growth = cfg["comparison"]["ladder"].get("until_stable")
    if growth is not None and growth["max_steps"] < train["steps"]:
        return [f"config field 'comparison.ladder.until_stable.max_steps': {growth['max_steps']} is below "
                f"train.steps ({train['steps']}); the ladder grows from the full budget up to max_steps"]
    if not on_grid(train["steps"], f, train["log_every"]):
        return [f"config field 'train.steps': the full budget's decay starts at step "
                f"{decay_start(train['steps'], f)}, which is not a positive multiple of train.log_every "
                f"({train['log_every']}); choose steps, log_every and lr_schedule.decay_fraction so that it is"]
    off_grid = [b for b in grown_steps(train["steps"], (growth or {}).get("max_steps"))
                if not on_grid(b, f, train["log_every"])]
    if off_grid:
        return [f"config field 'comparison.ladder.until_stable': the rung of {off_grid[0]} steps it may add decays "
                f"from step {decay_start(off_grid[0], f)}, not a multiple of train.log_every ({train['log_every']})"]
    # the plateau check reads the constant-lr trunk only (method §8.1): it needs its evaluations there
    # (evaluations happen at log boundaries that are multiples of eval_every)
    trunk_end, evals = decay_start(train["steps"], f), cfg["comparison"]["convergence"]["evals"]
    every = math.lcm(train["eval_every"], train["log_every"])
    if trunk_end // every < evals:
        return [f"config field 'train.eval_every': the plateau check (comparison.convergence.evals: {evals}) reads "
                f"the constant-lr trunk's validation evaluations up to step {trunk_end} (the full budget's branch "
                f"point), but eval_every {train['eval_every']} (with log_every {train['log_every']}) puts only "
                f"{trunk_end // every} there; choose a multiple of log_every no larger than {trunk_end // evals}"]
    return []
