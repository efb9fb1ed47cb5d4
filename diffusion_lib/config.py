"""Study configuration: schema validation with defaults, semantic checks, and sweep expansion.

:func:`load_config` is what the Snakefile calls before scheduling anything. It validates the whole
mapping against ``config.schema.yaml`` (package data, next to this module; filling in defaults), then checks what a
JSON schema cannot express, and raises :class:`ConfigError` listing *every* problem, each naming the
field (``train.batch_size``, ``strategies.adv.mode``, ...).

Sweeps (issue 7): each entry ``{base: NAME, grid: {param: [values...]}}`` expands into one strategy
per grid point, named ``NAME__param-value[__param-value...]`` with parameters in sorted order and
values formatted canonically (``1.0`` → ``1``, ``0.5`` → ``0.5``), so the same grid always yields the
same names (and Snakemake reuses cached runs) whatever order the YAML lists them in. A grid point whose
mining config equals an existing strategy's (typically the base itself) is not trained again: that
strategy's runs stand for the point in the ablation table and figures.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import jsonschema
import yaml

from .convergence import ConvergenceRule
from .diffusion import MiningConfig

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"  # shipped as package data
SWEEP_SEP = "__"


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
    return f"config field '{_field(error.absolute_path)}': {error.message}"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def format_value(value: Any) -> str:
    """Canonical, path-safe text of a sweep value (integers and floats without trailing zeros)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return format(value, "g") if isinstance(value, float) else str(value)


def sweep_name(base: str, point: Mapping[str, Any]) -> str:
    """Stable strategy name of one grid point."""
    return SWEEP_SEP.join([base, *(f"{k}-{format_value(point[k])}" for k in sorted(point))])


def expand_sweep(base: str, base_mining: Mapping[str, Any], grid: Mapping[str, list]) -> Iterator[tuple[str, dict, dict]]:
    """Yield ``(name, mining_config, point)`` for every point of ``grid`` over ``base_mining``."""
    keys = sorted(grid)
    values = [sorted(set(grid[k])) for k in keys]
    for combo in itertools.product(*values):
        point = dict(zip(keys, combo))
        yield sweep_name(base, point), {**base_mining, **point}, point


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
    the string ``'true'``; a user means integers and a boolean. Only a string that parses exactly
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
    ``sweep_points`` (strategy name → its base and swept parameter values) and ``sweep_aliases`` (grid-point name → the existing strategy with the same mining config, whose
    runs stand for that point instead of being trained again).
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
    # per-strategy seeds are not part of the mining config: keep them aside (sweep points use the
    # top-level seeds, so an ablation overlay's `seeds` sets its cost)
    cfg["strategy_seeds"] = {name: list(m.pop("seeds", cfg["seeds"])) for name, m in cfg["strategies"].items()}
    cfg["sweep_points"], cfg["sweep_aliases"] = {}, {}
    for i, sweep in enumerate(cfg["sweeps"]):
        base = sweep["base"]
        for name, mining, point in expand_sweep(base, cfg["strategies"][base], sweep["grid"]):
            twin = next((s for s, m in cfg["strategies"].items() if m == mining), None)
            if twin is not None and twin != name:
                # same mining config as an existing strategy: reuse its runs instead of retraining
                cfg["sweep_aliases"][name] = twin
                cfg["sweep_points"].setdefault(twin, {"base": base}).update(point)
                continue
            if name in cfg["strategies"] and name not in cfg["sweep_points"]:
                raise ConfigError(f"config field 'sweeps.{i}': generated strategy name {name!r} "
                                  "collides with a declared strategy")
            cfg["strategies"][name] = mining
            cfg["strategy_seeds"][name] = list(cfg["seeds"])
            cfg["sweep_points"].setdefault(name, {"base": base}).update(point)
    for name, mining in cfg["strategies"].items():
        # defaults of the mining block are filled by the schema; MiningConfig re-checks values.
        MiningConfig.from_mapping(mining)
    return cfg


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
    for key in ("lr", "max_loss", "grad_clip"):
        if not math.isfinite(train[key]):
            problems.append(f"config field 'train.{key}': must be finite, got {train[key]}")
    strategies, comparison = cfg["strategies"], cfg["comparison"]
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
        elif strategies[sweep["base"]]["mode"] == "none":
            problems.append(f"config field 'sweeps.{i}.base': strategy {sweep['base']!r} has mode 'none', "
                            "which uses no mining parameters to sweep")
    return problems


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
