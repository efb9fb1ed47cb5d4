"""What a run directory's name says (torch-free): ``<mode>-seed<k>-<key>``, its key a hash of
everything that shapes the run (:mod:`diffusion_lib.plan.layout`)."""
from __future__ import annotations

import re

RUN_PATTERN = r"(none|random|adversarial)-seed\d+-[0-9a-f]{12}"


def seed_of(run: str) -> int:
    """The training seed of run directory ``run`` (its name holds it, and its key depends on it)."""
    match = re.fullmatch(RUN_PATTERN.replace(r"seed\d+", r"seed(\d+)"), run)
    if match is None:
        raise ValueError(f"{run!r} is not a run directory name ({RUN_PATTERN})")
    return int(match.group(2))
