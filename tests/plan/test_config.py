import copy

import pytest
import yaml

import math
import re

from diffusion_lib.plan.config import ConfigError, load_config, load_schema
from diffusion_lib.plan.config import expand_sweep
from diffusion_lib.settings.names import format_value, sweep_name

GOOD = {
    "seeds": [0, 1],
    "strategies": {"baseline": {"mode": "none"}, "random": {"mode": "random"},
                   "adversarial": {"mode": "adversarial"}},
}


def _with(path, value):
    cfg = copy.deepcopy(GOOD)
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return cfg


def _drop(key):
    cfg = copy.deepcopy(GOOD)
    del cfg[key]
    return cfg


MALFORMED = [
    (_with(("strategies", "adversarial", "mode"), "hard"), "strategies.adversarial.mode"),
    (_with(("train", "steps"), 0), "train.steps"),
    (_with(("train", "steps"), -5), "train.steps"),
    (_with(("train", "batch_size"), 0), "train.batch_size"),
    (_with(("train", "batch_size"), "sixty-four"), "train.batch_size"),
    (_with(("seeds",), [0, 0]), "seeds"),
    (_with(("seeds",), [0, 1.5]), "seeds.1"),
    (_with(("train", "bacth_size"), 64), "'bacth_size' was unexpected"),
    (_with(("typo_top_level",), 1), "'typo_top_level' was unexpected"),
    (_with(("strategies", "adversarial", "opt_step"), 3), "'opt_step' was unexpected"),
    (_with(("strategies", "../evil"), {"mode": "none"}), "not a safe path component"),
    (_with(("strategies", "a b"), {"mode": "none"}), "not a safe path component"),
    (_with(("comparison", "baseline"), "nobaseline"), "comparison.baseline"),
    (_with(("comparison", "random"), "rnd"), "comparison.random"),
    (_with(("comparison", "baseline"), "random"), "comparison.baseline"),
    (_with(("data", "id_eps"), 0), "data.id_eps"),
    (_with(("data", "ood_eps"), -0.1), "data.ood_eps"),
    (_with(("data", "seed"), 1), "data.seed"),
    (_with(("train", "lr"), -1e-4), "train.lr"),
    (_with(("train", "lr"), "fast"), "train.lr"),
    (_with(("train", "ema", "decay"), 1.5), "train.ema.decay"),
    (_with(("train", "checkpoint_every"), 15), "train.checkpoint_every"),
    (_with(("strategies", "adversarial", "opt_steps"), 0), "strategies.adversarial.opt_steps"),
    (_with(("strategies", "adversarial", "scale_factor"), 0), "strategies.adversarial.scale_factor"),
    (_with(("strategies", "adversarial", "mine_every"), 0), "strategies.adversarial.mine_every"),
    (_with(("device",), "tpu"), "device"),
    (_with(("sweeps",), [{"base": "nope", "grid": {"opt_steps": [1]}}]), "sweeps.0.base"),
    (_with(("sweeps",), [{"base": "adversarial", "grid": {"opt_stepz": [1]}}]), "sweeps.0.grid"),
    (_with(("sweeps",), [{"base": "adversarial", "grid": {"opt_steps": [0, 1]}}]), "sweeps.0.grid.opt_steps.0"),
    (_with(("sweeps",), [{"base": "baseline", "grid": {"opt_steps": [1]}}]), "sweeps.0.base"),
    (_drop("strategies"), "'strategies' is a required property"),
    (_with(("evaluation", "inner_steps"), [-1]), "evaluation.inner_steps.0"),
    # per-strategy training overrides (issue 19)
    (_with(("strategies", "adversarial", "train"), {"steps": 10}), "'strategies.adversarial.train'"),
    (_with(("strategies", "adversarial", "train"), {"steps": 10}), "'steps' was unexpected"),
    (_with(("strategies", "adversarial", "train"), {"lr": -1e-3}), "strategies.adversarial.train.lr"),
    (_with(("strategies", "adversarial", "train"), {"lr": float("inf")}), "strategies.adversarial.train.lr"),
    (_with(("strategies", "adversarial", "train"), {"grad_clip": 0}), "strategies.adversarial.train.grad_clip"),
    (_with(("strategies", "adversarial", "train"), {"grad_clip": float("nan")}),
     "strategies.adversarial.train.grad_clip"),
    (_with(("strategies", "random", "train"), {"betas": [0.9, 1.0]}), "strategies.random.train.betas.1"),
    (_with(("train", "grad_clip"), float("nan")), "train.grad_clip"),
    (_with(("train", "lr"), float("inf")), "train.lr"),
    (_with(("sweeps",), [{"base": "adversarial", "grid": {"train.lr": [-1e-3]}}]), "sweeps.0.grid.train.lr.0"),
    (_with(("sweeps",), [{"base": "adversarial", "grid": {"train.lr": [float("inf")]}}]), "sweeps.0.grid.train.lr"),
    (_with(("sweeps",), [{"base": "adversarial", "grid": {"train.steps": [10]}}]), "sweeps.0.grid"),
    (_with(("sweeps",), [{"base": "baseline", "grid": {"train.lr": [1e-3], "opt_steps": [1]}}]), "sweeps.0.base"),
    (_with(("stability_margin", "seen_unstable"), {"lr": 5e-4}), "stability_margin.seen_unstable"),
    (_with(("stability_margin", "seen_unstable"), {"lr": 5e-4, "trunk": 100, "first_unstable": {"nope": 1}}),
     "stability_margin.seen_unstable.first_unstable"),
]


@pytest.mark.parametrize("cfg, field", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_configs_name_the_field(cfg, field):
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert field in str(err.value)


def test_defaults_are_filled():
    cfg = load_config(GOOD)
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["ema"]["decay"] == 0.995
    assert cfg["strategies"]["adversarial"]["opt_steps"] == 2
    assert cfg["evaluation"]["default_inner"] == 5


def _as_snakemake_sees(root, path):
    """config/config.yaml with ``path`` merged over it recursively, as Snakemake merges --configfile."""
    from snakemake.utils import update_config

    with open(root / "config/config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    with open(root / path) as fh:
        update_config(cfg, yaml.safe_load(fh))
    return load_config(cfg)


@pytest.mark.parametrize("path", ["config/config.yaml", "config/paper.yaml", "config/medium.yaml",
                                  "config/ablation.yaml", ".test/config/config.yaml"])
def test_shipped_configs_are_valid(root, path):
    _as_snakemake_sees(root, path)


def test_per_strategy_seeds_survive_overlays_as_intended(root):
    pilot = _as_snakemake_sees(root, "config/config.yaml")["strategy_seeds"]
    # the pilot's allocation by variance (docs/pilot-design.md, rule 3): fewest runs where seeds vary least
    assert (len(pilot["baseline"]), len(pilot["random"]), len(pilot["adversarial"])) == (3, 3, 8)
    paper = _as_snakemake_sees(root, "config/paper.yaml")["strategy_seeds"]
    assert all(seeds == list(range(10)) for seeds in paper.values())  # none keeps the pilot's seeds
    ablation = _as_snakemake_sees(root, "config/ablation.yaml")
    assert ablation["strategy_seeds"]["adversarial__opt_steps-5"] == [0, 1]  # grid points: top-level seeds


def test_strategy_seeds_are_kept_out_of_the_mining_config():
    cfg = copy.deepcopy(GOOD)
    cfg["strategies"]["random"] = {"mode": "random", "seeds": [7, 8]}
    out = load_config(cfg)
    assert out["strategy_seeds"]["random"] == [7, 8] and "seeds" not in out["strategies"]["random"]
    assert out["strategy_seeds"]["baseline"] == out["seeds"]
    cfg["strategies"]["random"]["seeds"] = [cfg["data"]["seed"] if "data" in cfg else 20240601]
    with pytest.raises(ConfigError, match="data.seed"):
        load_config(cfg)


def test_comparison_settings_are_checked():
    cfg = _with(("comparison",), {"primary": {"set": "test_id", "inner_steps": 7}})
    with pytest.raises(ConfigError, match="comparison.primary.inner_steps"):
        load_config(cfg)
    cfg = _with(("comparison",), {"convergence": {"evals": 3}})
    with pytest.raises(ConfigError, match="comparison.convergence.evals"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="comparison.convergence"):
        load_config(_with(("comparison",), {"convergence": {"method": "window"}}))  # the spread rule is gone
    with pytest.raises(ConfigError, match="comparison.instability.factor"):
        load_config(_with(("comparison",), {"instability": {"factor": 1.0}}))
    out = load_config(GOOD)
    assert out["comparison"]["instability"] == {"factor": 2.0}
    assert out["comparison"]["primary"] == {"set": "test_id", "inner_steps": None}
    assert out["comparison"]["delta"] == 0.05
    assert out["comparison"]["convergence"] == {"evals": 6, "tolerance": 0.025, "per": "doubling"}
    assert out["comparison"]["failures"] == {"factor": 10.0}


def test_sweep_names_are_stable_and_path_safe():
    grid = {"scale_factor": [2.0, 0.5, 1.0], "opt_steps": [5, 1, 2]}
    names = [p.name for p in expand_sweep("adv", {"mode": "adversarial"}, grid)]
    reordered = {"opt_steps": [2, 5, 1], "scale_factor": [1.0, 2.0, 0.5]}
    assert names == [p.name for p in expand_sweep("adv", {"mode": "adversarial"}, reordered)]
    assert len(names) == 9 and len(set(names)) == 9
    assert "adv__opt_steps-1__scale_factor-0.5" in names and "adv__opt_steps-2__scale_factor-1" in names
    assert sweep_name("adv", {"mine_every": 4}) == "adv__mine_every-4"


def test_sweeps_expand_into_strategies():
    cfg = _with(("sweeps",), [{"base": "adversarial", "grid": {"mine_every": [1, 2, 4]}},
                               {"base": "random", "grid": {"energy_loss_weight": [0.25, 1.0]}}])
    out = load_config(cfg)
    swept = [s for s in out["strategies"] if "__" in s]
    assert len(swept) == 4 and out["sweep_aliases"] == {"adversarial__mine_every-1": "adversarial"}
    assert out["strategies"]["adversarial__mine_every-4"]["mine_every"] == 4
    assert out["strategies"]["adversarial__mine_every-4"]["mode"] == "adversarial"
    assert out["sweep_points"]["random__energy_loss_weight-0.25"] == {"base": "random", "energy_loss_weight": 0.25}


def test_grid_points_equal_to_an_existing_strategy_reuse_its_runs():
    cfg = _with(("sweeps",), [{"base": "adversarial", "grid": {"opt_steps": [1, 2]}},
                               {"base": "adversarial", "grid": {"scale_factor": [1.0, 2.0]}}])
    out = load_config(cfg)
    assert "adversarial__opt_steps-2" not in out["strategies"]  # equals the base (opt_steps 2, scale 1)
    assert out["sweep_aliases"] == {"adversarial__opt_steps-2": "adversarial",
                                    "adversarial__scale_factor-1": "adversarial"}
    assert out["sweep_points"]["adversarial"] == {"base": "adversarial", "opt_steps": 2, "scale_factor": 1.0}
    assert {"adversarial__opt_steps-1", "adversarial__scale_factor-2"} <= set(out["strategies"])


# --------------------------------------------------------------- per-strategy training overrides (issue 19)
def _strategies(**train):
    cfg = copy.deepcopy(GOOD)
    for name, override in train.items():
        cfg["strategies"][name]["train"] = override
    return cfg


def test_training_overrides_are_kept_out_of_the_mining_config():
    out = load_config(_strategies(adversarial={"lr": 1e-3, "grad_clip": 2.0}))
    assert out["strategy_train"] == {"baseline": {}, "random": {}, "adversarial": {"lr": 1e-3, "grad_clip": 2.0}}
    assert "train" not in out["strategies"]["adversarial"] and out["train"]["lr"] == 1e-4  # top level untouched


def test_an_infinite_grad_clip_is_accepted_from_yaml_and_the_command_line():
    text = "train: {grad_clip: .inf}\nstrategies: {adversarial: {mode: adversarial, train: {grad_clip: .inf}}}"
    raw = yaml.safe_load(text)
    out = load_config({**GOOD, "train": raw["train"], "strategies": {**GOOD["strategies"], **raw["strategies"]}})
    assert out["train"]["grad_clip"] == math.inf and out["strategy_train"]["adversarial"]["grad_clip"] == math.inf
    for text in (".inf", "inf", "+.inf", "Infinity"):
        out = load_config(_strategies(adversarial={"grad_clip": text}))
        assert out["strategy_train"]["adversarial"]["grad_clip"] == math.inf, text
    with pytest.raises(ConfigError, match="strategies.adversarial.train.lr"):
        load_config(_strategies(adversarial={"lr": ".inf"}))


def test_sweeps_over_training_overrides_have_stable_path_safe_names():
    grid = {"train.grad_clip": [math.inf, 2.0, 0.5], "opt_steps": [1, 2]}
    points = list(expand_sweep("adversarial", {"mode": "adversarial"}, grid, {"lr": 1e-3}))
    reordered = {"opt_steps": [2, 1], "train.grad_clip": [0.5, math.inf, 2.0]}
    assert [p.name for p in points] == [p.name for p in expand_sweep("adversarial", {"mode": "adversarial"},
                                                                     reordered, {"lr": 1e-3})]
    by_name = {p.name: p for p in points}
    clip_off = by_name["adversarial__opt_steps-1__train.grad_clip-inf"]
    assert clip_off.mining == {"mode": "adversarial", "opt_steps": 1}  # no train key in the mining config
    assert clip_off.train == {"lr": 1e-3, "grad_clip": math.inf}  # the base's overrides, then the point's
    assert clip_off.point == {"opt_steps": 1, "train.grad_clip": math.inf}
    pattern = load_schema()["$defs"]["name"]["pattern"]
    assert len(by_name) == 6 and all(re.fullmatch(pattern, name) for name in by_name)
    assert sweep_name("baseline", {"train.lr": 5e-4}) == "baseline__train.lr-0.0005"
    assert sweep_name("baseline", {"train.lr": 1e-5}) == "baseline__train.lr-1e-05"
    # exact and path-safe whatever the value: no two values share a name
    assert format_value(0.12345671) != format_value(0.12345672) and format_value(1234567.5) == "1234567.5"
    assert format_value(1e20) == "100000000000000000000" and format_value(math.inf) == "inf"


def test_a_training_sweep_over_the_baseline_reuses_the_baseline_where_it_equals_it():
    cfg = _with(("sweeps",), [{"base": "baseline", "grid": {"train.lr": [1e-4, 1e-3]}},
                               {"base": "adversarial", "grid": {"train.grad_clip": [1.0, math.inf]}}])
    out = load_config(cfg)
    assert out["sweep_aliases"] == {"baseline__train.lr-0.0001": "baseline",  # 1e-4: the top-level lr
                                    "adversarial__train.grad_clip-1": "adversarial"}
    assert out["strategy_train"]["baseline__train.lr-0.001"] == {"lr": 1e-3}
    assert out["strategies"]["baseline__train.lr-0.001"] == out["strategies"]["baseline"]
    assert out["strategy_train"]["adversarial__train.grad_clip-inf"] == {"grad_clip": math.inf}
    assert out["sweep_points"]["baseline"] == {"base": "baseline", "train.lr": 1e-4}
    assert out["sweep_points"]["adversarial__train.grad_clip-inf"] == {"base": "adversarial",
                                                                       "train.grad_clip": math.inf}


def test_sweep_aliases_compare_mining_and_training_values():
    cfg = _strategies()
    cfg["strategies"]["adv_clip2"] = {"mode": "adversarial", "train": {"grad_clip": 2.0}}
    cfg["strategies"]["adv_same"] = {"mode": "adversarial", "train": {"grad_clip": 1.0}}  # = the default
    cfg["sweeps"] = [{"base": "adversarial", "grid": {"train.grad_clip": [2.0, 3.0]}},
                     {"base": "adv_clip2", "grid": {"opt_steps": [2, 3]}}]
    out = load_config(cfg)
    # same mining config and the same grad_clip: the declared strategy's runs stand for the point
    assert out["sweep_aliases"]["adversarial__train.grad_clip-2"] == "adv_clip2"
    assert out["sweep_aliases"]["adv_clip2__opt_steps-2"] == "adv_clip2"
    # same mining config, another grad_clip: a strategy of its own, trained with its base's override
    assert "adversarial__train.grad_clip-3" in out["strategies"] and "adv_clip2__opt_steps-3" in out["strategies"]
    assert out["strategy_train"]["adv_clip2__opt_steps-3"] == {"grad_clip": 2.0}
    # an override equal to the top-level value is the strategy without it
    cfg["sweeps"] = [{"base": "adv_same", "grid": {"opt_steps": [2]}}]
    assert load_config(cfg)["sweep_aliases"] == {"adv_same__opt_steps-2": "adversarial"}


def test_the_train_block_is_declared_once_in_the_schema(root):
    """TrainConfig's defaults, the fields left out of a run's key and the implementation keys all
    come from config.schema.yaml (train_fields): a run built with defaults is the workflow's default run."""
    import dataclasses

    from diffusion_lib.plan import layout
    from diffusion_lib.settings import run_config
    from diffusion_lib.settings.train_fields import DATA_DEFAULTS, NOT_SHAPING, TRAIN_DEFAULTS, flat_fields

    own = {"rank", "train_eps", "seed", "measure_flops"}  # the data block's, the run's, bookkeeping
    names = {f.name for f in dataclasses.fields(run_config.TrainConfig)}
    assert names - own == set(flat_fields())
    defaults = run_config.TrainConfig()
    assert {k: getattr(defaults, k) for k in flat_fields()} == flat_fields()
    assert (defaults.rank, defaults.train_eps) == (DATA_DEFAULTS["rank"], DATA_DEFAULTS["id_eps"])
    assert (defaults.steps, defaults.batch_size, defaults.ema_power) == (100_000, 2048, 2 / 3)  # method §4
    assert NOT_SHAPING == ("checkpoint_every", "compile", "aot", "cuda_graphs", "pack", "gradients")
    assert layout.NOT_SHAPING_TRAIN_KEYS == NOT_SHAPING
    assert set(run_config.IMPLEMENTATION_KEYS) == (set(NOT_SHAPING) - {"pack"}) | {"measure_flops"}
    # the workflow's validated block maps onto the same config, nested fields renamed
    cfg = load_config(yaml.safe_load((root / "config/config.yaml").read_text()))
    run = run_config.train_config(cfg["train"], seed=3, rank=20, id_eps=0.5)
    assert run.ema_decay == cfg["train"]["ema"]["decay"] and run.lr_schedule == cfg["train"]["lr_schedule"]["kind"]
    assert run.steps == cfg["train"]["steps"] and run.seed == 3
    assert set(TRAIN_DEFAULTS) == set(cfg["train"])  # every field of the block has its default there


def test_report_format_takes_one_or_a_list_and_names_the_field_when_wrong(root):
    base = yaml.safe_load((root / "config/config.yaml").read_text())
    for given, expected in (("pdf", ["png", "pdf"]), (["svg", "png"], ["png", "svg"]), ("png", ["png"])):
        cfg = copy.deepcopy(base)
        cfg["report"]["format"] = given
        assert load_config(cfg)["report"]["format"] == expected
    cfg = copy.deepcopy(base)
    cfg["report"]["format"] = ["eps"]
    with pytest.raises(ConfigError, match=r"config field 'report\.format': \['eps'\] is not one of png, pdf, svg"):
        load_config(cfg)


def test_a_trunk_without_enough_evaluations_for_the_plateau_check_is_refused():
    """The plateau check reads only the constant-lr trunk (method §8.1): 2,900 steps with a 20% decay branch
    at 2,320; at eval_every 580 only 4 evaluations lie there, fewer than convergence.evals = 6."""
    train = {"steps": 2900, "log_every": 29, "eval_every": 580, "checkpoint_every": 580,
             "lr_schedule": {"kind": "wsd", "warmup_steps": 100, "decay_fraction": 0.2}}
    with pytest.raises(ConfigError, match=r"config field 'train.eval_every'.*up to step 2320.*only 4 there.*386"):
        load_config({**GOOD, "train": train})
    assert load_config({**GOOD, "train": {**train, "eval_every": 290}})["train"]["eval_every"] == 290  # 8 there
    constant = {**train, "eval_every": 464, "lr_schedule": {"kind": "constant", "warmup_steps": 0}}
    with pytest.raises(ConfigError, match=r"config field 'train.eval_every'"):
        load_config({**GOOD, "train": {**constant, "eval_every": 580}})  # 5 by step 2,900
    assert load_config({**GOOD, "train": constant})["train"]["eval_every"] == 464  # 6 by step 2,900
