"""Study configuration: schema validation with defaults, then the semantic checks
(:mod:`diffusion_lib.plan.config_checks`) and sweep expansion (issue 7: a grid over a base strategy's
mining config and training overrides, one strategy per grid point, named canonically by
:mod:`diffusion_lib.settings.names`: :func:`expand_sweep`).

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
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import jsonschema
import yaml

from ..settings.mining import MiningConfig
from ..settings.names import SWEEP_TRAIN_PREFIX, sweep_name
from ..settings.train_fields import SCHEMA_PATH  # the schema, shipped as package data
from .config_checks import semantic_problems, stability_problems


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


def effective_overrides(train: Mapping[str, Any], override: Mapping[str, Any], keys: tuple[str, ...]
                        ) -> dict[str, Any]:
    """Every overridable key's value for a strategy with ``override`` (the top-level ``train``
    block's where it declares none): with its mining config, what tells its runs apart."""
    values = {k: override.get(k, train[k]) for k in keys}
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}



def strategy_arms(cfg: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    """Each strategy of a loaded config as (arm, learning rate): a grid point that sweeps the learning
    rate alone belongs to its base strategy's arm (a learning-rate grid reads as one arm at several
    rates); any other strategy is an arm of its own. The rate is the strategy's override, else
    ``train.lr``."""
    def arm(name: str) -> str:
        point = cfg["sweep_points"].get(name) or {}
        return str(point["base"]) if set(point) == {"base", f"{SWEEP_TRAIN_PREFIX}lr"} else name
    return {s: (arm(s), float(cfg["strategy_train"][s].get("lr", cfg["train"]["lr"]))) for s in cfg["strategies"]}


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


def override_keys(schema: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The ``train`` keys a strategy may override (``$defs.train_override`` of the schema)."""
    schema = load_schema() if schema is None else schema
    return tuple(schema["$defs"]["train_override"]["properties"])


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
    as the schema's type is converted (for a field of several shapes, ``oneOf``, as the first shape
    it converts to); anything else is left for validation to report.
    """
    root = schema if root is None else root
    schema = _resolve_ref(schema, root)
    for branch in schema.get("oneOf", schema.get("anyOf", ())):  # a field of several shapes: the first that converts
        converted = coerce_cli_values(value, branch, root)
        if converted != value:
            return converted
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
        problems = semantic_problems(cfg, explicit_roles)
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
    _resolve_stability(cfg)
    return cfg


def _resolve_stability(cfg: dict[str, Any]) -> None:
    """``comparison.stability`` names strategies or grid points: a grid point that another strategy's
    runs stand for (``sweep_aliases``) is named by that strategy; then the design is checked against
    every strategy (:func:`~diffusion_lib.plan.config_checks.stability_problems`)."""
    design = cfg["comparison"].get("stability")
    if not design:
        return
    alias = cfg["sweep_aliases"]
    design["primary"] = [alias.get(n, n) for n in design["primary"]]
    design["secondary"] = [[alias.get(n, n) for n in pair] for pair in design["secondary"]]
    design["controls"] = {alias.get(c, c): reading for c, reading in design["controls"].items()}
    problems = stability_problems(design, cfg["strategies"])
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


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


def merge_config(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's --configfile semantics: mappings merge recursively, anything else replaces."""
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_config(base[key], value)
        else:
            base[key] = value
    return base


def load_study_config(configfiles: Sequence[str | Path]) -> dict[str, Any]:
    """The validated study config of ``configfiles``, later files merged over earlier ones as
    Snakemake merges --configfile files."""
    cfg: dict[str, Any] = {}
    for path in configfiles:
        with open(path) as fh:
            merge_config(cfg, yaml.safe_load(fh) or {})
    return load_config(cfg)
