"""Study configuration: schema validation with defaults, semantic checks, and sweep expansion.

:func:`load_config` is what the Snakefile calls before scheduling anything. It validates the whole
mapping against ``config.schema.yaml`` (package data, next to this module; filling in defaults), then checks what a
JSON schema cannot express, and raises :class:`ConfigError` listing *every* problem, each naming the
field (``train.batch_size``, ``strategies.adv.mode``, ...).

Training overrides (issue 19): a strategy may declare ``train: {lr: ..., grad_clip: ..., betas: ...}``,
its own values of those top-level ``train`` keys (``grad_clip: .inf`` never clips). They are kept
out of the mining config (``strategy_train``) and enter its runs' keys through
:func:`diffusion_lib.plan.layout.run_train_block`: an override equal to the top-level value changes nothing.

Sweeps (issue 7): each entry ``{base: NAME, grid: {param: [values...]}}`` expands into one strategy
per grid point, named ``NAME__param-value[__param-value...]`` with parameters in sorted order and
values formatted canonically (``1.0`` → ``1``, ``0.5`` → ``0.5``, ``.inf`` → ``inf``), so the same grid
always yields the same names (and Snakemake reuses cached runs) whatever order the YAML lists them in.
A grid varies mining parameters and, spelled ``train.lr`` / ``train.grad_clip``, the base's training
overrides (the only kind of grid a mode-``none`` base accepts). A grid point whose mining config and
overridable train values equal an existing strategy's (typically the base itself) is not trained
again: that strategy's runs stand for the point in the ablation table and figures.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import jsonschema
import yaml

from ..analysis.convergence import ConvergenceRule
from ..spec.ladder import LADDER_SCHEDULES, decay_fraction, grown_steps, on_grid
from ..spec.lr_schedule import decay_start
from ..spec.sweep_names import SWEEP_SEP, SWEEP_TRAIN_PREFIX, format_value, sweep_name  # noqa: F401 (re-exported)
from ..spec.mining import MiningConfig
from ..spec.run_config import closed_form_mismatch
from ..spec.train_fields import SCHEMA_PATH  # the schema, shipped as package data



class ConfigError(ValueError):
    """A configuration is malformed; the message names each offending field."""


def _with_defaults(validator_class: type) -> type:
    """A validator class that also fills in ``default`` values of object properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    if "propertyNames" in error.schema_path:
        return (f"config field '{_field(error.absolute_path)}': name {error.instance!r} is not a safe path "
                f"component (letters, digits, '_', '.', '-'; must start with a letter or digit)")
    if error.validator in ("oneOf", "anyOf") and error.schema.get("description"):
        # a field of several shapes: say what it takes rather than "not valid under any of the given schemas"
        return f"config field '{_field(error.absolute_path)}': {error.instance!r} is not {error.schema['description']}"
    return f"config field '{_field(error.absolute_path)}': {error.message}"


def report_formats(value: str | Sequence[str]) -> list[str]:
    """``report.format`` (one format or a list) as a list with ``png`` first: the HTML report
    embeds the PNG, the other formats are copies next to it."""
    return list(dict.fromkeys(["png", *([value] if isinstance(value, str) else value)]))


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


class GridPoint(NamedTuple):
    """One point of a sweep: the strategy it becomes."""

    name: str
    mining: dict[str, Any]  #: the base's mining config with the point's mining values
    train: dict[str, Any]  #: the base's training overrides with the point's ``train.*`` values
    point: dict[str, Any]  #: the swept values, keyed as in the grid (``opt_steps``, ``train.lr``)


def expand_sweep(base: str, base_mining: Mapping[str, Any], grid: Mapping[str, list],
                 base_train: Mapping[str, Any] | None = None) -> Iterator[GridPoint]:
    """Every point of ``grid`` over the base strategy's mining config and training overrides."""
    keys = sorted(grid)
    values = [sorted(set(grid[k])) for k in keys]
    for combo in itertools.product(*values):
        point = dict(zip(keys, combo))
        mining = {k: v for k, v in point.items() if not k.startswith(SWEEP_TRAIN_PREFIX)}
        train = {k[len(SWEEP_TRAIN_PREFIX):]: v for k, v in point.items() if k.startswith(SWEEP_TRAIN_PREFIX)}
        yield GridPoint(sweep_name(base, point), {**base_mining, **mining}, {**(base_train or {}), **train}, point)


def override_keys(schema: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The ``train`` keys a strategy may override (``$defs.train_override`` of the schema)."""
    schema = load_schema() if schema is None else schema
    return tuple(schema["$defs"]["train_override"]["properties"])


def effective_overrides(train: Mapping[str, Any], override: Mapping[str, Any], keys: tuple[str, ...]
                        ) -> dict[str, Any]:
    """Every overridable key's value for a strategy with ``override`` (the top-level ``train``
    block's where it declares none): with its mining config, what tells its runs apart."""
    values = {k: override.get(k, train[k]) for k in keys}
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}


def _resolve_ref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while isinstance(schema, Mapping) and "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def coerce_cli_values(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """``value`` with strings turned into the integers, numbers, booleans and lists the schema asks for.

    ``snakemake --config seeds=[0,1,2,3]`` delivers ``['0', '1', '2', '3']`` and ``partial=true``
    the string ``'true'``; a user means integers and a boolean (and ``.inf``/``inf`` a float
    infinity, e.g. ``grad_clip``: no clipping). Only a string that parses exactly
    as the schema's type is converted; anything else is left for validation to report.
    """
    root = schema if root is None else root
    schema = _resolve_ref(schema, root)
    kind = schema.get("type")
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind == "integer" and re.fullmatch(r"[+-]?\d+", text):
                return int(text)
            if kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
                return float(text)
            if kind == "number" and re.fullmatch(r"[+-]?\.?inf(inity)?", text, re.IGNORECASE):
                return float(text.replace(".", ""))  # YAML's .inf (grad_clip: no clipping)
        except ValueError:
            return value
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in ("array", "object") and text[:1] in "[{":
            try:
                return coerce_cli_values(yaml.safe_load(text), schema, root)
            except yaml.YAMLError:
                return value
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [coerce_cli_values(v, schema["items"], root) for v in value]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: coerce_cli_values(v, props[k], root) if k in props
                else coerce_cli_values(v, extra, root) if isinstance(extra, Mapping) else v
                for k, v in value.items()}
    return value


def load_config(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``config`` and return a completed copy with ``strategies`` including expanded sweeps.

    The returned mapping adds ``strategy_seeds`` (strategy name → its training seeds: its own
    ``seeds`` if declared, else the top-level ones; the key is removed from the mining config),
    ``strategy_train`` (strategy name → its training overrides as declared, ``{}`` without; a grid
    point's are its base's with the swept ``train.*`` values; the key is removed from the mining
    config), ``sweep_points`` (strategy name → its base and swept parameter values, keyed as in the
    grid) and ``sweep_aliases`` (grid-point name → the existing strategy with the same mining config
    and overridable train values, whose runs stand for that point instead of being trained again).
    """
    cfg = copy.deepcopy(dict(config))
    explicit_roles = set(cfg.get("comparison") or {}) if isinstance(cfg.get("comparison"), dict) else set()
    schema = load_schema(schema_path)
    cfg = coerce_cli_values(cfg, schema)
    Validator = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(Validator(schema).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    if not problems:
        problems = _semantic_problems(cfg, explicit_roles)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    cfg["report"]["format"] = report_formats(cfg["report"]["format"])
    # per-strategy seeds are not part of the mining config: keep them aside (sweep points use the
    # top-level seeds, so an ablation overlay's `seeds` sets its cost)
    cfg["strategy_seeds"] = {name: list(m.pop("seeds", cfg["seeds"])) for name, m in cfg["strategies"].items()}
    # so are the training overrides (they enter the run key through layout.run_train_block)
    cfg["strategy_train"] = {name: m.pop("train", {}) for name, m in cfg["strategies"].items()}
    keys = override_keys(schema)

    def identity(mining: Mapping[str, Any], train: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any]]:
        return mining, effective_overrides(cfg["train"], train, keys)

    name_is_safe = Validator(schema["$defs"]["name"]).is_valid
    cfg["sweep_points"], cfg["sweep_aliases"] = {}, {}
    for i, sweep in enumerate(cfg["sweeps"]):
        base = sweep["base"]
        for name, mining, train, point in expand_sweep(base, cfg["strategies"][base], sweep["grid"],
                                                       cfg["strategy_train"][base]):
            twin = next((s for s, m in cfg["strategies"].items()
                         if identity(m, cfg["strategy_train"][s]) == identity(mining, train)), None)
            if twin is not None and twin != name:
                # same mining config and training values as an existing strategy: reuse its runs
                cfg["sweep_aliases"][name] = twin
                cfg["sweep_points"].setdefault(twin, {"base": base}).update(point)
                continue
            if name in cfg["strategies"] and name not in cfg["sweep_points"]:
                raise ConfigError(f"config field 'sweeps.{i}': generated strategy name {name!r} "
                                  "collides with a declared strategy")
            if not name_is_safe(name):
                raise ConfigError(f"config field 'sweeps.{i}': generated strategy name {name!r} is not a safe "
                                  "path component of at most 100 characters (shorten the base's name or the grid)")
            cfg["strategies"][name] = mining
            cfg["strategy_train"][name] = train
            cfg["strategy_seeds"][name] = list(cfg["seeds"])
            cfg["sweep_points"].setdefault(name, {"base": base}).update(point)
    for name, mining in cfg["strategies"].items():
        # defaults of the mining block are filled by the schema; MiningConfig re-checks values.
        MiningConfig.from_mapping(mining)
    return cfg


def _gradient_problems(where: str, train: Mapping[str, Any]) -> list[str]:
    """``gradients: closed_form`` with a network the closed form does not describe
    (:func:`diffusion_lib.spec.run_config.closed_form_mismatch`)."""
    why = closed_form_mismatch(train.get("gradients", "auto"), train.get("model") or {})
    return [] if why is None else [f"config field '{where}.gradients': {why} ('{where}.model')"]


def _semantic_problems(cfg: dict[str, Any], explicit_roles: set[str]) -> list[str]:
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
    # the plateau check reads the constant-lr trunk only (SPEC §8.1): it needs its evaluations there
    # (evaluations happen at log boundaries that are multiples of eval_every)
    trunk_end, evals = decay_start(train["steps"], f), cfg["comparison"]["convergence"]["evals"]
    every = math.lcm(train["eval_every"], train["log_every"])
    if trunk_end // every < evals:
        return [f"config field 'train.eval_every': the plateau check (comparison.convergence.evals: {evals}) reads "
                f"the constant-lr trunk's validation evaluations up to step {trunk_end} (the full budget's branch "
                f"point), but eval_every {train['eval_every']} (with log_every {train['log_every']}) puts only "
                f"{trunk_end // every} there; choose a multiple of log_every no larger than {trunk_end // evals}"]
    return []


def option(config: Mapping[str, Any], dotted: str, schema_path: str | Path = SCHEMA_PATH) -> Any:
    """The value of ``dotted`` (``"train.checkpoint_every"``) in a raw config, else the schema default.

    For rule scripts reading a value that does not shape their outputs and therefore is not one
    of the rule's params (a change must not rerun the job): the checkpoint cadence, the device.
    """
    schema: Any = load_schema(schema_path)
    value: Any = coerce_cli_values(dict(config), schema)
    root = schema
    for part in dotted.split("."):
        schema = _resolve_ref(schema, root)["properties"][part]
        value = value.get(part) if isinstance(value, Mapping) else None
    return copy.deepcopy(_resolve_ref(schema, root).get("default")) if value is None else value
