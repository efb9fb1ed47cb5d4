"""The stability study's two calibrated controls (issue 44; the rules: docs/stability-design.md).

``python -m tools.stability_calibration [--jobs 2]`` trains each candidate below for 2,000 steps at
the study's edge learning rate (5e-4, constant after a 100-step warm-up, batch 64) with the
calibration seed 90 (used by no study), measures every 4th step from step 1,000 on
(:mod:`diffusion_lib.train.step_size`), and prints the table and the two controls the rules choose:

* **matched-step baseline**: lr = 5e-4 × median update size (adversarial) / median update size
  (baseline), to two significant digits;
* **unsaturated random negatives**: the first candidate, in the order listed, whose median
  contrastive loss is at least half the adversarial arm's; none if no candidate is.
"""
from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from typing import Any

EDGE_LR = 5.0e-4
CALIBRATION_SEED = 90
STEPS, MEASURE_FROM, EVERY = 2000, 1000, 4
ADVERSARIAL = {"mode": "adversarial", "opt_steps": 2, "scale_factor": 1.0, "noise_scale": 3.0,
               "energy_loss_weight": 0.5, "mine_every": 1}
ARMS = {"baseline": {"mode": "none"},
        "random": {"mode": "random", "noise_scale": 3.0, "energy_loss_weight": 0.5},
        "adversarial": ADVERSARIAL}
#: random-negative candidates for the unsaturated control, in order of preference: the weight alone
#: first (the issue's wording), then negatives nearer the data (a smaller noise scale)
RANDOM_CANDIDATES = {"random_w2": {"mode": "random", "noise_scale": 3.0, "energy_loss_weight": 2.0},
                     "random_w8": {"mode": "random", "noise_scale": 3.0, "energy_loss_weight": 8.0},
                     "random_ns1": {"mode": "random", "noise_scale": 1.0, "energy_loss_weight": 0.5},
                     "random_ns0.3": {"mode": "random", "noise_scale": 0.3, "energy_loss_weight": 0.5}}


def _measure(item: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    import torch

    from diffusion_lib.plan.config import load_study_config
    from diffusion_lib.settings.run_config import train_config
    from diffusion_lib.train.step_size import measure_steps, summarise

    torch.set_num_threads(1)
    name, mining = item
    cfg = load_study_config(["config/config.yaml"])
    train = {**cfg["train"], "steps": STEPS, "lr": EDGE_LR,
             "lr_schedule": {"kind": "constant", "warmup_steps": 100, "min_lr_ratio": 0.0}}
    tc = train_config(train, seed=CALIBRATION_SEED, rank=cfg["data"]["rank"], id_eps=cfg["data"]["id_eps"])
    return {"candidate": name, **summarise(measure_steps(tc, mining, MEASURE_FROM, EVERY))}


def matched_lr(adversarial_norm: float, baseline_norm: float, lr: float = EDGE_LR) -> float:
    """The matched-step baseline's lr: ``lr`` scaled by the update-size ratio, two significant digits."""
    value = lr * adversarial_norm / baseline_norm
    return float(f"{value:.2g}") if math.isfinite(value) and value > 0 else math.nan


def unsaturated(rows: dict[str, dict[str, Any]], candidates: list[str]) -> str | None:
    """The first of ``candidates`` whose median contrastive loss is at least half the adversarial arm's."""
    bar = 0.5 * rows["adversarial"]["loss_energy"]
    return next((c for c in candidates if rows[c]["loss_energy"] >= bar), None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.stability_calibration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="candidates trained at once (one thread each)")
    args = parser.parse_args(argv)
    items = [*ARMS.items(), *RANDOM_CANDIDATES.items()]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = {r["candidate"]: r for r in pool.map(_measure, items)}
    print(f"calibration seed {CALIBRATION_SEED}, lr {EDGE_LR:g}, {STEPS:,} steps, medians over every {EVERY}th "
          f"step from {MEASURE_FROM:,}:\n")
    print("| candidate | mining | update size ‖Δθ‖ | contrastive loss | denoising loss |\n|---|---|---|---|---|")
    for name, mining in items:
        r = rows[name]
        print(f"| {name} | {mining} | {r['update_norm']:.4g} | {r['loss_energy']:.4g} | {r['loss_mse']:.4g} |")
    lr = matched_lr(rows["adversarial"]["update_norm"], rows["baseline"]["update_norm"])
    pick = unsaturated(rows, list(RANDOM_CANDIDATES))
    print(f"\nmatched-step baseline: lr {lr:g} (update-size ratio adversarial / baseline "
          f"{rows['adversarial']['update_norm'] / rows['baseline']['update_norm']:.3f})")
    print(f"unsaturated random control: {pick} {RANDOM_CANDIDATES[pick] if pick else '(none qualifies)'}")


if __name__ == "__main__":
    main()
