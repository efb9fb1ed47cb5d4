"""One prepared GPU measurement (nothing here needs a network). Writes JSON after every record, so a
run cut short by its time limit still leaves what it measured.

    python tools/gpu_check.py --out $OUT/gpu.json [--sections bench,packs,paper,tf32] [--budget-s 300]

Sections (``--sections``, run in the order given, each skipped once ``--budget-s`` is spent):

* ``bench``: steps/s at batch 2048 for each mode x step implementation x precision (fp32, tf32), with
  host reads and device synchronisations per step and the warm-up (capture, compile) seconds
  (:func:`tools.bench.run`). Implementations (``--impls``):
  ``eager`` (one run: the closed-form step), ``graphs`` (``train.cuda_graphs``: one run's closed-form
  step captured as CUDA graphs), ``graphs_func`` (the functional gradient's graphs, the library's
  choice before issue 33, patched in here), ``compile`` (``train.compile``: torch.compile of the
  functional gradient) and ``aot`` (the closed-form step compiled ahead of time by AOTInductor, forced
  on CUDA here: on torch 2.11 loading its package crashed the process); ``--compiled-modes`` limits
  the slow-to-warm ones (compile, aot) to some modes;
* ``packs``: run-steps/s of packs of ``--packs`` runs per mode (``--pack-impl``, fp32), each pack
  of two or more by the closed form mapped over the pack and, beside it, by the functional gradient
  (``train.gradients: autograd``, the pack step before issue 45), the projected GPU-hours of the
  paper study (3 strategies x 10 seeds x 100K steps) with the best closed-form pack per mode, and
  that choice as a ``train.pack`` value;
* ``jobs``: ``--jobs`` training processes on one card at once (``resources.jobs_per_gpu``), timing
  the same window (a barrier after warm-up), adversarial and none: steps/s per run and per card,
  the timed windows' overlap, and the count with the most per card;
* ``paper``: one adversarial run of config/paper.yaml's recipe (method §9) for about
  ``--paper-seconds`` of training with the fastest measured implementation, its validation MSE
  every ``eval_every`` steps beside method §9's reference points;
* ``tf32``: TF32 against float64 (gradient cosine, opt-step accept flips) on that run's model, or on
  a briefly trained one (:func:`tools.precision.tf32_report`);
* ``study``: ``--seeds`` short adversarial runs in fp32 and in TF32, test MSE (5 inner steps) and the
  95% CI of the relative change TF32 vs fp32 (seed = unit).

``--device cpu --rank 4 --batch-size 16 --steps 10 --study-steps 20 --impls eager,aot --packs 1,2
--paper-seconds 3`` runs every section on a CPU as a smoke test (tests/test_bench_and_packaging.py).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository: tools/ and diffusion_lib/
IMPLS = ("eager", "graphs", "graphs_func", "compile", "aot")
#: method §9: validation MSE at 100K steps, batch 2048 (mean ± std over 10 seeds), and the paper's test MSE
REFERENCE = {"replication_100k": {"baseline": 0.009692, "random": 0.009731, "adversarial": 0.009777},
             "paper_test_mse_10_inner": 0.0096}


def _save(out: dict, path: str) -> None:
    with open(path, "w") as fh:
        json.dump({k: v for k, v in out.items() if not k.startswith("_")}, fh, indent=2, default=str)


@contextlib.contextmanager
def implementation(name: str) -> Iterator[dict[str, Any]]:
    """The TrainConfig flags of step implementation ``name``; for the variants the library does not
    choose by itself, the patch that makes the engine build them while the block runs."""
    import diffusion_lib.train.engine as engine_module
    import diffusion_lib.train.step as step_module
    from diffusion_lib.ired.gradients import func_gradients

    saved_mode, saved_gradient = engine_module.step_mode, step_module.gradient_function
    flags: dict[str, Any] = {"eager": {"cuda_graphs": False}, "graphs": {"cuda_graphs": True},
                             "graphs_func": {"cuda_graphs": True}, "compile": {"compile": True, "cuda_graphs": False},
                             "aot": {"aot": True, "cuda_graphs": False}}[name]
    try:
        if name == "graphs_func":  # one run's graph of torch.func's gradient, as before issue 33
            step_module.gradient_function = lambda template, clip, mode, n: step_module._packed(
                func_gradients(template, clip), n)
        if name == "aot":  # the library keeps it to CPUs: force it, keep the bench's eager twin eager
            engine_module.step_mode = lambda cfg, dev: "aot" if cfg.aot else saved_mode(cfg, dev)
        yield flags
    finally:
        engine_module.step_mode, step_module.gradient_function = saved_mode, saved_gradient


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}"[:600], "traceback": traceback.format_exc()[-3000:]}


def _short(rec: dict[str, Any], keys: tuple[str, ...]) -> str:
    return json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items() if k in keys})


BENCH_KEYS = ("mode", "impl", "step", "precision", "pack", "gradients", "steps_per_s", "run_steps_per_s", "compute_steps_per_s",
              "syncs_per_step", "device_syncs_per_step", "device_sync_sites", "warmup_seconds", "sample_ms_per_problem",
              "error")


def _measure(args: argparse.Namespace, out: dict, over: Any, section: str, label: str, impl: str,
             **kwargs: Any) -> None:
    """One :func:`tools.bench.run` of step implementation ``impl`` (``kwargs``: its mode, precision,
    pack, ...), appended to ``out[section]``, printed and saved; skipped (named ``label``) once the
    budget is spent, and a failure recorded rather than raised: one failing variant must not lose the rest."""
    from tools import bench

    if over():
        out["skipped"].append(label)
        return
    try:
        with implementation(impl) as flags:
            rec = bench.run(batch_size=args.batch_size, steps=args.steps, warmup=5, device=args.device, rank=args.rank,
                            peak=False, compile=flags.get("compile", False), cuda_graphs=flags.get("cuda_graphs", False),
                            aot=bool(flags.get("aot")), **kwargs)
    except Exception as exc:  # out of memory at a large pack, say
        rec = {k: v for k, v in kwargs.items() if k in ("mode", "precision", "pack", "gradients")} | _error(exc)
    rec["impl"] = impl
    out[section].append(rec)
    print(_short(rec, BENCH_KEYS), flush=True)
    _save(out, args.out)


def section_bench(args: argparse.Namespace, out: dict, over: Any) -> None:
    cuda = args.device.startswith("cuda")
    for precision in args.precisions.split(","):
        for impl in args.impls.split(","):
            if impl.startswith("graphs") and not cuda:
                continue
            for mode in ("adversarial", "none", "random"):
                if impl in ("compile", "aot") and mode not in args.compiled_modes.split(","):
                    continue
                _measure(args, out, over, "bench", f"bench {mode} {impl} {precision}", impl, mode=mode,
                         precision=precision, sample_problems=256 if cuda else 16)
    out["adversarial_100k_minutes"] = {f"{r['impl']}/{r['precision']}": 100_000 / r["steps_per_s"] / 60
                                       for r in out["bench"] if r["mode"] == "adversarial" and "steps_per_s" in r}
    print(json.dumps(out["adversarial_100k_minutes"]), flush=True)


def section_packs(args: argparse.Namespace, out: dict, over: Any) -> None:
    impl = args.pack_impl if args.device.startswith("cuda") else "eager"
    for mode in ("adversarial", "none", "random"):
        for size in (int(v) for v in args.packs.split(",")):
            for gradients in ("auto", "autograd") if size > 1 else ("auto",):
                _measure(args, out, over, "packs", f"pack {mode} x{size} ({gradients})", impl, mode=mode, pack=size,
                         gradients=gradients, sample_problems=16)
    best: dict[str, tuple[float, int]] = {}
    for rec in out["packs"]:
        if rec.get("gradients") == "auto" and "run_steps_per_s" in rec and (
                rec["run_steps_per_s"] > best.get(rec["mode"], (0.0, 0))[0]):
            best[rec["mode"]] = (rec["run_steps_per_s"], rec["pack"])
    if len(best) == 3:
        out["paper_study_gpu_hours"] = {
            "best_pack": {m: p for m, (_, p) in best.items()},
            "train_pack": {m: p for m, (_, p) in best.items() if p > 1} or 1,
            "hours": sum(10 * 100_000 / rate for rate, _ in best.values()) / 3600,
            "hours_unpacked": sum(10 * 100_000 / r["run_steps_per_s"] for r in out["packs"]
                                  if r.get("pack") == 1 and "run_steps_per_s" in r) / 3600}
        print(json.dumps(out["paper_study_gpu_hours"]), flush=True)


def section_jobs(args: argparse.Namespace, out: dict, over: Any) -> None:
    """Several training processes sharing one card (``resources.jobs_per_gpu``): for each count K of
    ``--jobs``, K single-run benchmarks (:mod:`tools.bench`, CUDA graphs on a GPU) that wait for each
    other after warming up (a barrier) and then time ``--jobs-steps`` steps each; steps/s of each,
    their median (per run), their sum (per card), how much of the timed windows overlapped, and K's
    per-card gain over one."""
    import subprocess
    import tempfile

    cuda = args.device.startswith("cuda")
    out.setdefault("jobs", [])
    for mode in ("adversarial", "none"):
        for count in (int(v) for v in args.jobs.split(",")):
            if over():
                out["skipped"].append(f"jobs {mode} x{count}")
                continue
            with tempfile.TemporaryDirectory() as barrier:
                cmd = [sys.executable, "-m", "tools.bench", "--mode", mode, "--batch-size", str(args.batch_size),
                       "--steps", str(args.jobs_steps), "--rank", str(args.rank), "--device", args.device,
                       "--no-peak", "--json", "--sample-problems", "16", "--threads", "1", "--barrier", barrier,
                       str(count), *(["--cuda-graphs"] if cuda else ["--no-aot"])]
                procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                         for _ in range(count)]
                records, errors = [], []
                for proc in procs:
                    try:
                        stdout, stderr = proc.communicate(timeout=args.jobs_timeout)
                    except subprocess.TimeoutExpired:
                        for p in procs:
                            p.kill()
                        stdout, stderr = proc.communicate()
                        errors.append(f"timed out after {args.jobs_timeout} s")
                        continue
                    lines = [line for line in stdout.splitlines() if line.startswith("{")]
                    if proc.returncode == 0 and lines:
                        records.append(json.loads(lines[-1]))
                    else:
                        errors.append(stderr[-600:])
            rates = [r["steps_per_s"] for r in records]
            rec: dict[str, Any] = {"mode": mode, "jobs": count, "per_job_steps_per_s": rates}
            if rates and not errors:
                starts, ends = zip(*(r["timed_window"] for r in records))
                longest = max(e - s for s, e in zip(starts, ends))
                rec.update(run_steps_per_s=sorted(rates)[len(rates) // 2], card_steps_per_s=sum(rates),
                           overlap=max(0.0, min(ends) - max(starts)) / longest if longest > 0 else 0.0)
            else:
                rec["error"] = " | ".join(errors)[:600]
            out["jobs"].append(rec)
            print(json.dumps(rec), flush=True)
            _save(out, args.out)
    best: dict[str, Any] = {}
    for mode in ("adversarial", "none"):
        measured = {r["jobs"]: r["card_steps_per_s"] for r in out["jobs"] if r["mode"] == mode and "card_steps_per_s" in r}
        if 1 in measured:
            top = max(measured, key=measured.__getitem__)
            best[mode] = {"jobs_per_gpu": top, "card_gain": measured[top] / measured[1]}
    if best:
        out["jobs_per_gpu"] = best
        print(json.dumps(best), flush=True)


def _fastest(out: dict, precision: str = "fp32") -> tuple[str, float]:
    """The fastest single-run implementation measured for the adversarial mode (eager if none)."""
    rates = [(r["steps_per_s"], r["impl"]) for r in out["bench"] if r.get("mode") == "adversarial"
             and r.get("precision") == precision and "steps_per_s" in r and "eager)" not in r.get("step", "")]
    if not rates:
        return "eager", 0.0
    rate, impl = max(rates)
    return impl, rate


def _paper_train(args: argparse.Namespace, mode: str, seconds: float, rate: float, impl: str,
                 precision: str = "fp32", seed: int = 0, steps: int | None = None) -> tuple[Any, Any, int]:
    """One run of config/paper.yaml's recipe (seeded as the workflow seeds it) for ``steps`` steps, or
    as many whole evaluation intervals as ``rate`` steps/s fits into ``seconds``; (result, engine, steps)."""
    from diffusion_lib.ired.data import make_heldout
    from diffusion_lib.train.engine import Engine
    from diffusion_lib.settings.run_config import train_config
    from diffusion_lib.ired.seeding import derive_seed

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    data, strategy = paper["data"], next(s for s in paper["strategies"].values() if s["mode"] == mode)
    cfg = train_config(paper["train"], seed=seed, rank=args.rank, id_eps=data["id_eps"])
    if steps is None:  # the paper's evaluation interval (a smoke test's small problems: two evaluations)
        every = cfg.eval_every if args.rank == data["rank"] else max(1, int(rate * seconds) // 2)
        steps = min(cfg.steps, max(every, int(rate * seconds) // every * every))
    else:
        every = min(cfg.eval_every, steps)
    cfg = dataclasses.replace(cfg, steps=steps, batch_size=args.batch_size, eval_every=every,
                              log_every=min(cfg.log_every, every), checkpoint_every=10**9, measure_flops=False,
                              precision=precision, val_size=min(cfg.val_size, data["val_size"]), aot=False)
    val = make_heldout(data["val_size"], args.rank, data["id_eps"], derive_seed(data["seed"], "val_id"), name="val_id")
    mining = {k: v for k, v in strategy.items() if k != "seeds"}
    with implementation(impl) as flags:
        cfg = dataclasses.replace(cfg, **flags)
        engine = Engine.seeded([cfg], mining, val, device=args.device, progress=False)
        (result,) = engine.train()
    return result, engine, steps


def section_paper(args: argparse.Namespace, out: dict, over: Any) -> None:
    if over():
        out["skipped"].append("paper")
        return
    impl, rate = _fastest(out)
    rate = rate or (300.0 if args.device.startswith("cuda") else 5.0)
    result, engine, steps = _paper_train(args, "adversarial", args.paper_seconds, rate, impl)
    out["paper"] = {"impl": impl, "steps": steps, "status": result.status, "train_seconds": result.train_seconds,
                    "steps_per_s": steps / result.train_seconds if result.train_seconds else None,
                    "curve": [{k: row.get(k) for k in ("step", "loss", "val_mse_ema", "val_mse_raw", "steps_per_s")}
                              for row in result.curve if row.get("val_mse_ema") == row.get("val_mse_ema")],
                    "reference": REFERENCE}
    out["_paper_model"] = engine.models(0)[0]
    print(json.dumps({k: v for k, v in out["paper"].items() if k != "reference"}, default=str), flush=True)


def section_tf32(args: argparse.Namespace, out: dict, over: Any) -> None:
    from diffusion_lib.ired.data import inverse_problems
    from tools.precision import tf32_report

    if over():
        out["skipped"].append("tf32_report")
        return
    cuda = args.device.startswith("cuda")
    model = out.pop("_paper_model", None)
    trained = f"the paper run ({out['paper']['steps']} steps)" if model is not None else ""
    if model is None:
        impl, rate = _fastest(out)
        result, engine, steps = _paper_train(args, "adversarial", 0, 1, impl, steps=args.study_steps)
        model, trained = engine.models(0)[0], f"{steps} steps"
    dev = torch.device(args.device)
    A, Y = inverse_problems(1024 if cuda else 64, args.rank, 0.5, torch.Generator(device=dev).manual_seed(5), dev)
    out["tf32_report"] = {"model": trained, **tf32_report(model, A, Y)}
    print(json.dumps(out["tf32_report"]), flush=True)


def section_study(args: argparse.Namespace, out: dict, over: Any) -> None:
    from diffusion_lib.ired.data import make_heldout
    from diffusion_lib.ired.evaluation import predict
    from diffusion_lib.analysis.statistics import relative_change_ci

    dev = torch.device(args.device)
    impl, _ = _fastest(out)
    test = make_heldout(1024 if dev.type == "cuda" else 64, args.rank, 0.5, seed=2024).to(dev)
    study: dict[str, list[float]] = {"fp32": [], "tf32": []}
    for seed in range(args.seeds):
        for precision in ("fp32", "tf32"):
            if over():
                out["skipped"].append(f"study seed {seed} {precision}")
                continue
            _, engine, _ = _paper_train(args, "adversarial", 0, 1, impl, precision, seed, steps=args.study_steps)
            pred, _ = predict(engine.models(0)[1], test, 5)
            study[precision].append(float((pred.cpu() - test.Y.cpu()).pow(2).mean()))
            out["study"] = {"steps": args.study_steps, "impl": impl, "test_mse": study}
            _save(out, args.out)
    if len(study["fp32"]) >= 2 and len(study["tf32"]) == len(study["fp32"]):
        rc = relative_change_ci(study["tf32"], study["fp32"], 0.95)
        out["study"]["tf32_vs_fp32"] = rc._asdict() if hasattr(rc, "_asdict") else dataclasses.asdict(rc)
        print(json.dumps(out["study"]), flush=True)


SECTIONS = {"bench": section_bench, "packs": section_packs, "jobs": section_jobs, "paper": section_paper,
            "tf32": section_tf32, "study": section_study}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sections", default="bench,packs,paper,tf32")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per benchmark")
    parser.add_argument("--study-steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=300, help="skip what remains after this many seconds")
    parser.add_argument("--rank", type=int, default=20, help="matrix size n (20: the paper's)")
    parser.add_argument("--impls", default="eager,graphs,graphs_func", help=f"step implementations, of {IMPLS}")
    parser.add_argument("--precisions", default="fp32,tf32")
    parser.add_argument("--compiled-modes", default="adversarial", help="modes to bench with compile and aot")
    parser.add_argument("--packs", default="1,5,10", help="pack sizes to benchmark (fp32)")
    parser.add_argument("--pack-impl", default="graphs", choices=["eager", "graphs"])
    parser.add_argument("--jobs", default="1,2,4", help="training processes sharing the card at once (section jobs)")
    parser.add_argument("--jobs-steps", type=int, default=2000, help="timed steps of each process in section jobs")
    parser.add_argument("--jobs-timeout", type=float, default=240, help="seconds before section jobs' processes are killed")
    parser.add_argument("--paper-seconds", type=float, default=75, help="training time of the paper-recipe run")
    args = parser.parse_args()
    for impl in args.impls.split(","):
        if impl not in IMPLS:
            parser.error(f"--impls: {impl!r} is not one of {IMPLS}")
    for name in args.sections.split(","):
        if name not in SECTIONS:
            parser.error(f"--sections: {name!r} is not one of {list(SECTIONS)}")
    start = time.time()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    out: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__,
                 "cuda": torch.version.cuda, "batch_size": args.batch_size, "rank": args.rank, "args": vars(args),
                 "bench": [], "packs": [], "skipped": [], "errors": {}}
    if cuda:
        free, total = torch.cuda.mem_get_info(dev)
        out["gpu_memory_gib"] = round(total / 2**30, 1)

    def over() -> bool:
        return time.time() - start > args.budget_s

    for name in args.sections.split(","):
        try:
            SECTIONS[name](args, out, over)
        except Exception as exc:  # a section that breaks must not lose the others
            out["errors"][name] = _error(exc)
            print(f"section {name} failed: {out['errors'][name]['traceback']}", flush=True)
        out["seconds"] = time.time() - start
        _save(out, args.out)
    print(json.dumps({"seconds": round(out["seconds"], 1), "skipped": out["skipped"],
                      "errors": list(out["errors"])}), flush=True)


if __name__ == "__main__":
    main()
