"""One prepared GPU measurement (nothing here needs a network). Writes JSON after every section, so a
run cut short by its time limit still leaves what it measured.

    python scripts/gpu_check.py --out $OUT/gpu.json [--budget-s 540] [--device cuda]

1. steps/s at batch 2048 for each mode x step implementation (eager, compiled, CUDA graphs) x
   precision (fp32, tf32), with host syncs per step and warm-up (compile/capture) time
   (diffusion_lib.bench);
2. the projected wall time of a 100K-step adversarial run for each implementation and precision;
2b. seed packs (diffusion_lib.pack): run-steps/s at batch 2048 for packs of --packs runs per mode,
   and the projected GPU-hours of the paper study (3 strategies x 10 seeds x 100K steps) with the
   best pack size of each mode;
3. TF32 against float64 on a briefly trained adversarial model: gradient cosine and the opt-step
   accept-flip rate (diffusion_lib.precision.tf32_report, real TF32);
4. a short study: --seeds adversarial runs in fp32 and in TF32, test MSE (5 inner steps) and the
   95% CI of the relative change TF32 vs fp32 (seed = unit).
``--device cpu --rank 4 --batch-size 16 --steps 10 --study-steps 20 --impls eager --packs 1,2`` runs every section on a
CPU as a smoke test (tests/test_bench_and_packaging.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch


def _save(out: dict, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2, default=str)


def _train(mode: str, seed: int, steps: int, batch: int, precision: str, device: str, rank: int = 20):
    from diffusion_lib.data import make_heldout
    from diffusion_lib.engine import Engine
    from diffusion_lib.run_config import TrainConfig

    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-4, rank=rank, eval_every=10**9, val_size=8,
                      log_every=max(steps // 4, 1), checkpoint_every=10**9, measure_flops=False, seed=seed,
                      precision=precision)
    # the workflow's seeding: seed k here is the workflow's seed k (same init, noise and data)
    engine = Engine.seeded([cfg], {"mode": mode}, make_heldout(8, rank, 0.5, seed=99), device=device, progress=False)
    engine.train()
    return engine.models(0)  # (raw, EMA)


def main() -> None:
    from diffusion_lib import bench
    from diffusion_lib.data import inverse_problems, make_heldout
    from diffusion_lib.evaluation import predict
    from diffusion_lib.precision import tf32_report
    from diffusion_lib.statistics import relative_change_ci

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per benchmark")
    parser.add_argument("--study-steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=540, help="skip remaining sections after this")
    parser.add_argument("--rank", type=int, default=20, help="matrix size n (20: the paper's)")
    parser.add_argument("--impls", default="eager,cuda_graphs,compile", help="step implementations to benchmark")
    parser.add_argument("--packs", default="1,5,10", help="pack sizes to benchmark (eager, fp32)")
    args = parser.parse_args()
    start = time.time()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    out: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
                 "batch_size": args.batch_size, "rank": args.rank, "bench": [], "skipped": []}
    impls = [(name, flags) for name, flags in (("eager", {}), ("cuda_graphs", {"cuda_graphs": True}),
                                               ("compile", {"compile": True})) if name in args.impls.split(",")]
    for precision in ("fp32", "tf32"):
        for name, flags in impls:
            if name == "cuda_graphs" and not cuda:
                continue
            for mode in ("adversarial", "none", "random"):
                if time.time() - start > args.budget_s * 0.35 or (name == "compile" and mode != "adversarial"):
                    out["skipped"].append(f"bench {mode} {name} {precision}")
                    continue
                try:
                    rec = bench.run(mode, batch_size=args.batch_size, steps=args.steps, warmup=5, device=args.device,
                                    rank=args.rank, sample_problems=256 if cuda else 16, peak=False,
                                    precision=precision, **flags)
                except Exception as exc:  # record and go on: one failing mode must not lose the rest
                    rec = {"mode": mode, "step": name, "precision": precision, "error": repr(exc)[:300]}
                rec["impl"] = name
                out["bench"].append(rec)
                print(json.dumps({k: rec.get(k) for k in ("mode", "impl", "step", "precision", "steps_per_s",
                                                           "syncs_per_step", "warmup_seconds", "error")}), flush=True)
                _save(out, args.out)
    out["adversarial_100k_minutes"] = {f"{r['impl']}/{r['precision']}": 100_000 / r["steps_per_s"] / 60
                                       for r in out["bench"] if r["mode"] == "adversarial" and "steps_per_s" in r}
    print(json.dumps(out["adversarial_100k_minutes"]), flush=True)
    _save(out, args.out)

    out["packs"] = []
    for mode in ("adversarial", "none", "random"):
        for size in (int(v) for v in args.packs.split(",")):
            if time.time() - start > args.budget_s * 0.6:
                out["skipped"].append(f"pack {mode} x{size}")
                continue
            try:
                rec = bench.run(mode, batch_size=args.batch_size, steps=args.steps, warmup=3, device=args.device,
                                rank=args.rank, sample_problems=16, peak=False, pack=size)
            except Exception as exc:  # out of memory at a large pack, say: record it and go on
                rec = {"mode": mode, "pack": size, "error": repr(exc)[:300]}
            out["packs"].append(rec)
            print(json.dumps({k: rec.get(k) for k in ("mode", "pack", "steps_per_s", "run_steps_per_s",
                                                       "syncs_per_step", "error")}), flush=True)
            _save(out, args.out)
    best = {}
    for rec in out["packs"]:
        if "run_steps_per_s" in rec and rec["run_steps_per_s"] > best.get(rec["mode"], (0, 0))[0]:
            best[rec["mode"]] = (rec["run_steps_per_s"], rec["pack"])
    if len(best) == 3:
        out["paper_study_gpu_hours"] = {
            "best_pack": {m: p for m, (_, p) in best.items()},
            "hours": sum(10 * 100_000 / rate for rate, _ in best.values()) / 3600,
            "hours_unpacked": sum(10 * 100_000 / r["run_steps_per_s"] for r in out["packs"]
                                  if r.get("pack") == 1 and "run_steps_per_s" in r) / 3600}
        print(json.dumps(out["paper_study_gpu_hours"]), flush=True)
    _save(out, args.out)

    if time.time() - start < args.budget_s * 0.65:
        raw, _ = _train("adversarial", 0, args.study_steps, args.batch_size, "fp32", args.device, args.rank)
        A, Y = inverse_problems(1024 if cuda else 64, args.rank, 0.5, torch.Generator(device=dev).manual_seed(5), dev)
        out["tf32_report"] = tf32_report(raw, A, Y)
        print(json.dumps(out["tf32_report"]), flush=True)
        _save(out, args.out)
    else:
        out["skipped"].append("tf32_report")

    test = make_heldout(1024 if cuda else 64, args.rank, 0.5, seed=2024)
    study: dict[str, list[float]] = {"fp32": [], "tf32": []}
    for seed in range(args.seeds):
        for precision in ("fp32", "tf32"):
            if time.time() - start > args.budget_s:
                out["skipped"].append(f"study seed {seed} {precision}")
                continue
            _, ema = _train("adversarial", seed, args.study_steps, args.batch_size, precision, args.device, args.rank)
            pred, _ = predict(ema, test.to(dev), 5)
            study[precision].append(float((pred - test.Y).pow(2).mean()))
            out["study"] = {"steps": args.study_steps, "test_mse": study}
            _save(out, args.out)
    if len(study["fp32"]) >= 2 and len(study["tf32"]) == len(study["fp32"]):
        rc = relative_change_ci(study["tf32"], study["fp32"], 0.95)
        out["study"]["tf32_vs_fp32"] = rc._asdict() if hasattr(rc, "_asdict") else dataclasses.asdict(rc)
        print(json.dumps(out["study"]), flush=True)
    out["seconds"] = time.time() - start
    _save(out, args.out)


if __name__ == "__main__":
    main()
