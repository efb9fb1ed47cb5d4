"""Which runs, splits and evaluations a study has, and the keys that name them (where their files
lie is :mod:`diffusion_lib.plan.files`).

Every output is keyed by what shapes it: a held-out split by its rank, data seed, eps, size and
split; the reference by its test sets and reference size; a run (``<mode>-seed<k>-<key>``) by every
training value that shapes it and its validation set; an evaluation by its settings and test sets.

Strategy names never enter a run's key: two studies (or two strategies of one study) with the
same mining config, training config and seed share one run, and a study never overwrites another
study's runs. The training code's fingerprint is not part of the key either: editing the
library reruns the affected runs in place (a rule parameter), so the results do not grow with
every edit.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..settings.mining import MiningConfig
from ..settings.train_fields import NOT_SHAPING
from ..settings.run_config import train_config
from ..settings.provenance import value_key
from ..settings.names import RUN_PATTERN, seed_of  # noqa: F401 (re-exported: the workflow's wildcard pattern)
from . import files

SPLITS = ("val_id", "val_ood", "test_id", "test_ood")
TEST_SETS = ("test_id", "test_ood")
EVAL_PATTERN = r"[0-9a-f]{10}"
# how a run is computed, not what it computes: never part of a key or a param (TrainConfig.identity);
# the schema's ``x-shapes-run: false`` fields (``pack``: runs trained together equal their solo runs,
# tests/train/test_pack.py)
NOT_SHAPING_TRAIN_KEYS = NOT_SHAPING


@dataclass(frozen=True)
class RunSpec:
    """One (strategy, seed) of a study and the run directory that holds it."""

    strategy: str
    seed: int
    run: str
    mode: str
    mining: dict[str, Any] = field(hash=False, compare=False)
    #: the ``train`` block that shapes this run: the config's, without :data:`NOT_SHAPING_TRAIN_KEYS`,
    #: with the strategy's overrides applied (:func:`run_train_block`); what its training job is given
    train: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def dir(self) -> str:
        return files.RUN_DIR.format(run=self.run)

    @property
    def mining_config(self) -> dict[str, Any]:
        """The mining config with every default filled in: what training is given (strategies
        spelled differently but meaning the same share a run, and get the same params)."""
        return asdict(MiningConfig.from_mapping(self.mining))


def split_params(cfg: Mapping[str, Any], split: str) -> dict[str, Any]:
    """The values that shape held-out split ``split``: what its data job is given."""
    data = cfg["data"]
    kind = split.split("_")[1]
    return {"split": split, "rank": data["rank"], "seed": data["seed"], "eps": data[f"{kind}_eps"],
            "size": data["val_size"] if split.startswith("val") else data["test_size"]}


def reference_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The values that shape the trivial-predictor reference (besides the test sets it scores)."""
    data = cfg["data"]
    return {k: data[k] for k in ("rank", "seed", "id_eps", "ood_eps", "reference_size")}


def run_train_block(cfg: Mapping[str, Any], strategy: str | None = None) -> dict[str, Any]:
    """The config's ``train`` block without the values that do not shape a run; with ``strategy``,
    that strategy's training overrides (``cfg["strategy_train"]``, from ``strategies.<name>.train``
    or a sweep's ``train.*`` grid keys) applied: what shapes that strategy's runs, keys sorted."""
    block = {k: copy.deepcopy(v) for k, v in cfg["train"].items() if k not in NOT_SHAPING_TRAIN_KEYS}
    if strategy is not None:
        block.update(copy.deepcopy(cfg["strategy_train"][strategy]))
    # keys sorted: a rule param, compared as written, so the order of keys in the config files (or of
    # an overlay merged over them) must not read as a change and retrain
    return {k: block[k] for k in sorted(block)}


class Layout:
    """Paths of one validated study config (see the module docstring)."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg
        self.study = cfg["study"]
        self.files = files.StudyFiles(self.study)
        self.study_dir = self.files.dir
        self.split_keys = {s: value_key(split_params(cfg, s), 10) for s in SPLITS}
        self.splits = {s: files.SPLIT.format(split=s, key=k) for s, k in self.split_keys.items()}
        self.reference_key = value_key({**reference_params(cfg), "tests": [self.splits[t] for t in TEST_SETS]}, 10)
        self.reference = files.REFERENCE.format(key=self.reference_key)
        self.eval_key = value_key({"settings": cfg["evaluation"], "tests": [self.splits[t] for t in TEST_SETS]}, 10)
        self.runs = [self._run(strategy, seed) for strategy in cfg["strategies"]
                     for seed in cfg["strategy_seeds"][strategy]]
        self.run_of: dict[str, RunSpec] = {}
        for spec in self.runs:
            self.run_of.setdefault(spec.run, spec)

    def _run(self, strategy: str, seed: int) -> RunSpec:
        data = self.cfg["data"]
        mining = dict(self.cfg["strategies"][strategy])
        train = run_train_block(self.cfg, strategy)
        identity = train_config(train, seed=seed, rank=data["rank"], id_eps=data["id_eps"]
                                ).identity(MiningConfig.from_mapping(mining))
        key = value_key({"train": identity, "val": self.splits["val_id"]}, 12)
        return RunSpec(strategy, int(seed), f"{mining['mode']}-seed{seed}-{key}", mining["mode"], mining, train)

    def eval_dir(self, run: str) -> str:
        return files.eval_dir(run, self.eval_key)

    def rung_dir(self, run: str, steps: int) -> str:
        """Where run ``run``'s model at budget ``steps`` lives (:func:`~diffusion_lib.plan.files.model_dir`)."""
        return files.model_dir(run, steps, self.cfg["train"]["steps"])

    trunk_state = staticmethod(files.trunk_state)

    def rung_eval_dir(self, run: str, steps: int) -> str:
        """A rung's evaluation: the run's own (full) evaluation at the full budget and, with the run's
        settings, at a rung ``until_stable`` added above it; a smaller rung is scored on its endpoints
        only (:attr:`rung_eval_settings`)."""
        if steps == self.cfg["train"]["steps"]:
            return self.eval_dir(run)
        # a grown rung may become the study's full budget: scored in full
        key = self.eval_key if steps > self.cfg["train"]["steps"] else self.rung_eval_key
        return files.eval_dir(files.model_name(run, steps, self.cfg["train"]["steps"]), key)

    @property
    def rung_eval_settings(self) -> dict[str, Any]:
        """Evaluation settings of a smaller rung: the primary family's endpoints (ID/OOD × {0, default}
        inner steps, raw model), no landscape probes."""
        ev = self.cfg["evaluation"]
        return {**ev, "inner_steps": sorted({0, ev["default_inner"]}), "landscape": False}

    @property
    def rung_eval_key(self) -> str:
        return value_key({"settings": self.rung_eval_settings, "tests": [self.splits[t] for t in TEST_SETS]}, 10)

    def index(self) -> list[dict[str, Any]]:
        """One row per (strategy, seed): where its run and its evaluation live."""
        return [{"strategy": r.strategy, "seed": r.seed, "run": r.run, "run_dir": r.dir,
                 "eval_dir": self.eval_dir(r.run)} for r in self.runs]


def main(argv: list[str] | None = None) -> None:
    """``python -m diffusion_lib.plan.layout config/config.yaml [overlay.yaml ...]``: where each
    (strategy, seed) of that study lives, as tab-separated lines."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m diffusion_lib.layout", description=main.__doc__)
    parser.add_argument("configfiles", nargs="+", help="config files, later ones merged over earlier ones")
    args = parser.parse_args(argv)
    from .config import load_study_config

    layout = Layout(load_study_config(args.configfiles))
    print(f"# study {layout.study}: report in {layout.study_dir}/")
    print("strategy\tseed\trun_dir\teval_dir")
    for row in layout.index():
        print(f"{row['strategy']}\t{row['seed']}\t{row['run_dir']}\t{row['eval_dir']}")


if __name__ == "__main__":
    main()
