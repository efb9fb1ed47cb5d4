"""Which recipe is stable for every arm (issue 34; ``config/stability.yaml``, docs/pilot-design.md).

The stability sweep trains each arm at each learning rate as one long constant-lr run. Read here:

* a run's **stable length**: the last validation evaluation before the instability rule
  (:class:`~diffusion_lib.analysis.instability.InstabilityRule`, ``comparison.instability``) fires, or its
  last evaluation when it never fires;
* its **trunk skill** at a step: 1 − validation MSE (EMA) / the per-entry-mean predictor's MSE on the
  same validation problems (the validation analogue of the verdict's skill);
* **rule 1** (:func:`choose_lr`): one learning rate for every arm, the largest at which every run of
  every arm is stable over the whole sweep; if none, the lr whose shortest stable length is longest,
  and the study's trunk is cut to half of it;
* **rule 2** (:func:`choose_rungs`): rungs ``[r, 1]`` with r the smallest candidate such that every
  run at the chosen lr has a trunk skill of at least ``min_skill`` at the rung's branch point.

Both rules read stability, validation loss and cost only, never a contrast between arms.
``python -m tools.recipe_stability config/stability.yaml`` prints the table and the choices
from a finished sweep.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from diffusion_lib.analysis.instability import InstabilityRule
from diffusion_lib.settings.lr_schedule import decay_start


def run_stability(curve: pd.DataFrame, rule: InstabilityRule, checks: Sequence[int] = ()) -> dict[str, Any]:
    """One run's stable length, where the rule fired (``unstable_at``, NaN if never), the ratio there,
    its best validation MSE, and the validation MSE at each step of ``checks`` (``val_at_<step>``:
    the evaluation at that step, NaN if there is none)."""
    c = curve.dropna(subset=[rule.metric]).sort_values("step")
    steps, values = c["step"].astype(int).tolist(), c[rule.metric].astype(float).tolist()
    hit = rule.first(steps, values)
    before = [s for s in steps if hit is None or s < hit["step"]]
    row = {"evaluated_to": steps[-1] if steps else 0, "stable_to": before[-1] if before else 0,
           "unstable_at": hit["step"] if hit else math.nan, "ratio": hit["ratio"] if hit else math.nan,
           "best": min(values) if values else math.nan}
    at = dict(zip(steps, values))
    row.update({f"val_at_{s}": at.get(s, math.nan) for s in checks})
    return row


def sweep_table(curves: pd.DataFrame, arms: Mapping[str, tuple[str, float]], rule: InstabilityRule,
                entry_mean: float, checks: Sequence[int] = ()) -> pd.DataFrame:
    """One row per run of the sweep: ``arm`` (the mining mode), ``lr``, ``seed``, :func:`run_stability`'s
    fields and the trunk skill at each step of ``checks`` (``skill_at_<step>``). ``arms``: strategy →
    (mode, lr); ``entry_mean``: the per-entry-mean predictor's MSE on the validation problems."""
    rows = []
    for (strategy, seed), g in curves.groupby(["strategy", "seed"], sort=True):
        if strategy not in arms:
            continue
        mode, lr = arms[strategy]
        row = {"strategy": strategy, "arm": mode, "lr": lr, "seed": int(seed), **run_stability(g, rule, checks)}
        row.update({f"skill_at_{s}": 1 - row[f"val_at_{s}"] / entry_mean for s in checks})
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["lr", "arm", "seed"], ascending=[False, True, True], ignore_index=True)


def choose_lr(table: pd.DataFrame, sweep_steps: int) -> tuple[float, int]:
    """Rule 1: (lr, shortest stable length at that lr). The largest lr at which every run is stable
    over all ``sweep_steps``; else the lr whose shortest stable length is longest."""
    shortest = table.groupby("lr")["stable_to"].min()
    fully = [lr for lr, s in shortest.items() if s >= sweep_steps and
             table.loc[table["lr"] == lr, "unstable_at"].isna().all()]
    lr = max(fully) if fully else float(shortest.idxmax())
    return float(lr), int(shortest[lr])


def study_trunk(stable_to: int, log_every: int) -> int:
    """The longest trunk a study may use when its arms were seen stable to ``stable_to``: half of it,
    snapped down to the log grid (issue 34's margin)."""
    return (stable_to // 2) // log_every * log_every


def choose_rungs(table: pd.DataFrame, lr: float, steps: int, decay_fraction: float,
                 candidates: Sequence[float] = (0.5, 0.75), min_skill: float = 0.10) -> list[float] | None:
    """Rule 2: ``[r, 1.0]`` with r the smallest of ``candidates`` whose rung (r·steps) branches at a step
    where every run at ``lr`` has trunk skill ≥ ``min_skill``; None when no candidate qualifies.
    Needs the table's ``skill_at_<branch point>`` columns."""
    runs = table[table["lr"] == lr]
    for r in sorted(candidates):
        column = f"skill_at_{decay_start(round(r * steps), decay_fraction)}"
        if column in runs and len(runs) and (runs[column] >= min_skill).all():
            return [r, 1.0]
    return None


def markdown(table: pd.DataFrame, checks: Sequence[int]) -> str:
    """The sweep table for docs: one line per run."""
    head = ["arm", "lr", "seed", "stable to", "unstable at (× best)", "best val MSE",
            *[f"skill at {s:,}" for s in checks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        row = r._asdict()
        blown = "never" if math.isnan(row["unstable_at"]) else f"{int(row['unstable_at']):,} ({row['ratio']:.1f}×)"
        cells = [row["arm"], f"{row['lr']:g}", str(row["seed"]), f"{int(row['stable_to']):,}", blown,
                 f"{row['best']:.5f}", *[f"{row[f'skill_at_{s}']:+.1%}" for s in checks]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m tools.recipe_stability config/stability.yaml [--study-steps 5800]``: the sweep's
    table and the recipe rules' choices (run from the checkout root, after the sweep finished)."""
    import argparse

    from diffusion_lib.ired.data import load_heldout, reference_mean_target, trivial_predictor_mse
    from diffusion_lib.plan.config import load_study_config
    from diffusion_lib.plan.layout import Layout
    from diffusion_lib.ired.seeding import derive_seed

    parser = argparse.ArgumentParser(prog="python -m tools.recipe_stability", description=main.__doc__)
    parser.add_argument("overlay", help="the sweep's config overlay (merged over config/config.yaml)")
    parser.add_argument("--study-steps", type=int, default=5800, help="train.steps of the study being designed")
    args = parser.parse_args(argv)
    cfg = load_study_config(["config/config.yaml", args.overlay])
    layout = Layout(cfg)
    train, data = cfg["train"], cfg["data"]
    val = load_heldout(layout.splits["val_id"], rank=data["rank"]).subset(train["val_size"])
    mean = reference_mean_target(data["rank"], data["id_eps"], derive_seed(data["seed"], "reference-id"),
                                 data["reference_size"])
    entry_mean = trivial_predictor_mse(val, mean)["entry_mean"]
    f = 0.2  # the designed study's decay fraction (docs/pilot-design.md)
    checks = sorted({decay_start(round(r * args.study_steps), f) for r in (0.5, 0.75, 1.0)})
    arms = {s: (cfg["strategies"][s]["mode"], float(cfg["strategy_train"][s].get("lr", train["lr"])))
            for s in cfg["strategies"]}
    curves = pd.read_csv(layout.files.table("curves"))
    table = sweep_table(curves, arms, InstabilityRule.from_mapping(cfg["comparison"]["instability"]), entry_mean, checks)
    print(f"per-entry-mean predictor on the {len(val)} validation problems: MSE {entry_mean:.5f}\n")
    print(markdown(table, checks))
    lr, stable_to = choose_lr(table, train["steps"])
    trunk = study_trunk(stable_to, train["log_every"])
    print(f"\nrule 1: lr {lr:g} (every arm's runs stable to at least {stable_to:,} steps; a study's trunk may be "
          f"at most {trunk:,} steps)")
    print(f"rule 2: rungs {choose_rungs(table, lr, args.study_steps, f)} of {args.study_steps:,} steps")


if __name__ == "__main__":
    main()
