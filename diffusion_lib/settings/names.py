"""How runs and sweep grid points are named (torch-free).

A run directory is ``<mode>-seed<k>-<key>``, its key a hash of everything that shapes the run
(:mod:`diffusion_lib.plan.layout`). A sweep grid point ``{param: value, ...}`` over base strategy
``NAME`` is the strategy ``NAME__param-value[__param-value...]`` with parameters in sorted order and
values written canonically (:func:`format_value`), so the same grid always yields the same names;
grid keys spelled ``train.<key>`` vary the base strategy's training override of ``<key>``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

RUN_PATTERN = r"(none|random|adversarial)-seed\d+-[0-9a-f]{12}"


def seed_of(run: str) -> int:
    """The training seed of run directory ``run`` (its name holds it, and its key depends on it)."""
    match = re.fullmatch(RUN_PATTERN.replace(r"seed\d+", r"seed(\d+)"), run)
    if match is None:
        raise ValueError(f"{run!r} is not a run directory name ({RUN_PATTERN})")
    return int(match.group(2))


SWEEP_SEP = "__"
#: grid keys spelled ``train.<key>`` vary the base strategy's training override of ``<key>``
SWEEP_TRAIN_PREFIX = "train."


def format_value(value: Any) -> str:
    """Canonical, path-safe text of a sweep value: integers and floats without trailing zeros
    (``1.0`` → ``1``, ``5e-4`` → ``0.0005``, ``1e-5`` → ``1e-05``, ``inf`` → ``inf``), and exact: two
    values never share a text (``1234567.5`` → ``1234567.5``, not ``g``'s ``1.23457e+06``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, float):
        return str(value)
    text = format(value, "g")
    return text if float(text) == value else repr(value)  # repr: the shortest exact text


def sweep_name(base: str, point: Mapping[str, Any]) -> str:
    """Stable strategy name of one grid point."""
    return SWEEP_SEP.join([base, *(f"{k}-{format_value(point[k])}" for k in sorted(point))])
