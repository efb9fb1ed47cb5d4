"""One prepared GPU measurement (run it where a CUDA GPU is present; nothing here needs network).

    python scripts/gpu_check.py --out gpu-results.json [--steps 30] [--tf32-train-steps 3000]

Measures, on the current GPU:
1. training steps/s at batch 2048 for each mode, fp32 and TF32 (diffusion_lib.bench, median of timed steps);
2. the projected wall time of a 100K-step adversarial run (both precisions);
3. throughput of 1, 2 and 4 concurrent adversarial runs on the one GPU (the `--resources gpu=N` story);
4. the effect of TF32 on validation MSE after a short training run (same seed, fp32 vs TF32).
Prints and writes one JSON document; copy its numbers into docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch


def _bench(args: tuple[str, int, int, bool]) -> dict:
    from diffusion_lib import bench
    mode, batch, steps, tf32 = args
    return bench.run(mode, batch_size=batch, steps=steps, warmup=5, device="cuda", peak=False, tf32=tf32)


def _short_run(tf32: bool, steps: int) -> dict:
    from diffusion_lib.data import make_heldout
    from diffusion_lib.training import TrainConfig, Trainer1D, build_diffusion, heldout_mse
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=2048, lr=1e-4, eval_every=steps, val_size=1024, log_every=100,
                      checkpoint_every=10**9, seed=0)
    trainer = Trainer1D(build_diffusion(20, 10, {"mode": "none"}), cfg, make_heldout(1024, 20, 0.5, 7),
                        device="cuda", progress=False)
    start = time.time()
    trainer.train()
    return {"tf32": tf32, "steps": steps, "seconds": time.time() - start,
            "val_mse_ema": heldout_mse(trainer.ema.ema_model, trainer.val_set, 5),
            "val_mse_raw": heldout_mse(trainer.diffusion, trainer.val_set, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results.json")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tf32-train-steps", type=int, default=3000)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    out: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "bench": []}
    for tf32 in (False, True):
        for mode in ("none", "random", "adversarial"):
            rec = _bench((mode, 2048, args.steps, tf32))
            out["bench"].append(rec)
            print(json.dumps({k: rec[k] for k in ("mode", "tf32", "steps_per_s", "achieved_gflops")}), flush=True)
    adv = {r["tf32"]: r["steps_per_s"] for r in out["bench"] if r["mode"] == "adversarial"}
    out["adversarial_100k_minutes"] = {("tf32" if k else "fp32"): 100_000 / v / 60 for k, v in adv.items()}
    ctx = mp.get_context("spawn")
    out["concurrent"] = []
    for n in (1, 2, 4):
        with ctx.Pool(n) as pool:
            recs = pool.map(_bench, [("adversarial", 2048, args.steps, True)] * n)
        total = sum(r["steps_per_s"] for r in recs)
        out["concurrent"].append({"processes": n, "total_steps_per_s": total})
        print(json.dumps(out["concurrent"][-1]), flush=True)
    out["tf32_effect"] = [_short_run(False, args.tf32_train_steps), _short_run(True, args.tf32_train_steps)]
    print(json.dumps(out["tf32_effect"]), flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
