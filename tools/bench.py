"""Speed benchmark of training, data generation and sampling.

    python -m tools.bench --mode adversarial --batch-size 256 --steps 50 [--device cpu|cuda]
        [--compile] [--cuda-graphs] [--precision fp32|tf32] [--pack N] [--gradients auto|autograd] [--no-aot] --json

prints one JSON object: ``steps_per_s`` (the training loop's step: data, update, EMA and the
logged sums; median over blocks of :data:`BLOCK` steps after warm-up, one device sync per block),
``compute_steps_per_s`` (same, on a pre-generated batch), ``syncs_per_step`` (host reads of device
values per step, :mod:`diffusion_lib.train.host_reads`), ``device_syncs_per_step`` (on CUDA: every operation
that made the host wait for the GPU, inside torch too, as ``torch.cuda.set_sync_debug_mode`` sees them) and
``device_sync_sites`` (where they were called from), ``timed_window`` (wall-clock start and end of the timed
blocks, to check that processes sharing a card timed together), ``warmup_seconds`` (includes compiling and graph
capture), ``data_ms_per_batch``,
``sample_ms_per_problem`` (inference with the default inner loop), the FLOPs of one training step
per problem (matmul FLOPs counted by ``torch.profiler``: ``train_mflop_per_problem`` of the reference
formulation, what budgets are computed from, and ``executed_mflop_per_problem``, what the engine's step
actually runs; for the step compiled ahead of time, the eager closed form's, whose products it runs),
the achieved GFLOP/s of training and of sampling, the machine's fp32 matmul peak measured on the spot
(``--peak``) and the fractions of it, device, torch version and thread count.

It times the training engine (:class:`~diffusion_lib.train.engine.Engine`) itself, with ``train.aot``'s
default (on a CPU the step compiled ahead of time, its compile or load in ``warmup_seconds``;
``--no-aot`` times the eager step). ``--pack N`` times
N runs trained together instead of one: ``steps_per_s`` is then the engine's step rate and
``run_steps_per_s`` = N × that, the training throughput to compare with a single run's ``steps_per_s``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from typing import Any, Callable

import torch

from diffusion_lib.train.flops import counted_flops, step_flops
from diffusion_lib.ired.data import ProblemStream, inverse_problems
from diffusion_lib.train.engine import Engine
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.jobs.runtime import keep_freed_memory
from diffusion_lib.ired.seeding import resolve_device
from diffusion_lib.train.host_reads import count_device_syncs, count_host_reads
from diffusion_lib.train.curve import accumulate


def wait_for_each_other(folder: str, count: int, timeout: float = 600.0) -> None:
    """A barrier between processes: mark this one ready in ``folder`` and wait until ``count`` are."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, f"ready-{os.getpid()}"), "w").close()
    deadline = time.time() + timeout
    while len([f for f in os.listdir(folder) if f.startswith("ready-")]) < count:
        if time.time() > deadline:
            raise TimeoutError(f"{count} processes did not all reach the barrier in {folder} within {timeout:.0f} s")
        time.sleep(0.01)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def matmul_peak_gflops(device: torch.device, size: int = 1024, repeats: int = 10) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of a square ``size`` matmul (the machine's practical peak)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


BLOCK = 10


def run(mode: str = "adversarial", batch_size: int = 256, steps: int = 50, warmup: int = 5,
        device: str = "auto", rank: int = 20, threads: int | None = None, sample_problems: int = 256,
        peak: bool = True, precision: str = "fp32", compile: bool = False, cuda_graphs: bool = False,
        pack: int = 1, aot: bool = True, gradients: str = "auto", barrier: tuple[str, int] | None = None
        ) -> dict[str, Any]:
    """Measure one mode and step implementation; returns the benchmark record (see module docstring).
    ``barrier`` = (folder, K): after warming up, wait until K processes (this one included) have
    reached that point, so that processes sharing a device time the same window."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the workflow's jobs do (runtime.setup_torch)
    keep_freed_memory()
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    if cuda_graphs and dev.type != "cuda":
        raise ValueError("--cuda-graphs needs a CUDA device")
    gen = torch.Generator(device=dev).manual_seed(0)
    cfg = TrainConfig(batch_size=batch_size, rank=rank, lr=1e-4, ema_update_every=10, ema_update_after_step=100,
                      compile=compile, cuda_graphs=cuda_graphs, precision=precision, measure_flops=False,
                      aot="auto" if aot else False, gradients=gradients)
    engine = Engine.seeded([dataclasses.replace(cfg, seed=seed) for seed in range(pack)], {"mode": mode}, device=dev,
                           progress=False)
    active = [True] * pack
    state: dict[str, Any] = {"step": 0, "sums": {}}

    def train_step(draws: tuple[torch.Tensor, ...] | None = None) -> None:
        parts = engine.step_once(state["step"], active, draws)
        accumulate(state["sums"], parts)  # as the loop does between log rows
        state["step"] += 1

    def block(draws: tuple[torch.Tensor, ...] | None = None) -> None:
        for _ in range(BLOCK):
            train_step(draws)

    start = time.perf_counter()
    for _ in range(max(warmup, 1)):
        train_step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    warmup_s = time.perf_counter() - start
    if barrier is not None:
        wait_for_each_other(*barrier)
    blocks = max(1, steps // BLOCK)
    window = [time.time()]
    full = [_timed(block, dev) / BLOCK for _ in range(blocks)]
    window.append(time.time())
    fixed = engine.draw(active)
    compute = [_timed(lambda: block(fixed), dev) / BLOCK for _ in range(blocks)]
    with count_host_reads() as reads, count_device_syncs(dev) as device_syncs:
        block()
    stream = ProblemStream(batch_size, rank, 0.5, 0, dev)
    data = [_timed(lambda: next(stream), dev) for _ in range(max(10, steps // 2))]
    diffusion = engine.models(0)[0]
    flops_per_problem = step_flops(diffusion, batch_size, rank, 0.5, diffusion.mining.mines, dev) / batch_size
    if engine.update.mode == "aot":  # the profiler does not see into the compiled step: count the eager
        # closed form, whose products it runs
        twin = Engine.seeded([dataclasses.replace(cfg, seed=seed, aot=False) for seed in range(pack)], {"mode": mode},
                             device=dev, progress=False)
        executed_per_problem = counted_flops(lambda: twin.step_once(state["step"], active)) / (batch_size * pack)
    else:
        executed_per_problem = counted_flops(train_step) / (batch_size * pack)
    A, _ = inverse_problems(sample_problems, rank, 0.5, gen, dev)
    diffusion.sample(A[:8])  # warm-up
    sample_s = statistics.median(_timed(lambda: diffusion.sample(A), dev) for _ in range(3))
    sample_flops = counted_flops(lambda: diffusion.sample(A))
    steps_per_s = 1 / statistics.median(full)
    record = {
        "mode": mode, "batch_size": batch_size, "timed_steps": blocks * BLOCK, "warmup_steps": max(warmup, 1),
        "step": engine.update.mode + (" (compile failed: eager)" if engine.update.compile_failed else "")
        + (" (not compiled: eager)" if engine.update.aot_failed else ""),
        "pack": pack, "gradients": gradients, "run_steps_per_s": pack * steps_per_s, "timed_window": window,
        "precision": precision, "steps_per_s": steps_per_s, "compute_steps_per_s": 1 / statistics.median(compute),
        "syncs_per_step": sum(reads.values()) / BLOCK, "warmup_seconds": warmup_s,
        "device_syncs_per_step": device_syncs["count"] / BLOCK if dev.type == "cuda" else None,
        "device_sync_sites": device_syncs["sites"],
        "data_ms_per_batch": 1000 * statistics.median(data),
        "sample_ms_per_problem": 1000 * sample_s / sample_problems,
        "train_mflop_per_problem": flops_per_problem / 1e6,
        "executed_mflop_per_problem": executed_per_problem / 1e6,
        "sample_mflop_per_problem": sample_flops / sample_problems / 1e6,
        "achieved_gflops": executed_per_problem * batch_size * pack * steps_per_s / 1e9,
        "sample_gflops": sample_flops / sample_s / 1e9,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if peak:
        record["matmul_peak_gflops"] = matmul_peak_gflops(dev)
        record["fraction_of_peak"] = record["achieved_gflops"] / record["matmul_peak_gflops"]
        record["sample_fraction_of_peak"] = record["sample_gflops"] / record["matmul_peak_gflops"]
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["none", "random", "adversarial"], default="adversarial")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50, help="timed steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--rank", type=int, default=20, help="matrix size n")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sample-problems", type=int, default=256)
    parser.add_argument("--precision", choices=["fp32", "tf32"], default="fp32", help="tf32: TF32 matmuls on CUDA")
    parser.add_argument("--compile", action="store_true", help="torch.compile the whole training step")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture and replay the step as CUDA graphs")
    parser.add_argument("--pack", type=int, default=1, help="time a pack of N runs trained together")
    parser.add_argument("--no-aot", action="store_true",
                        help="time the eager step instead of the one compiled ahead of time (train.aot: false)")
    parser.add_argument("--gradients", choices=["auto", "closed_form", "autograd"], default="auto",
                        help="train.gradients: autograd times the functional gradient (torch.func) instead of the closed form")
    parser.add_argument("--barrier", nargs=2, metavar=("FOLDER", "K"),
                        help="after warm-up, wait until K processes have reached this point (processes sharing a card)")
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a readable table)")
    args = parser.parse_args(argv)
    for name, value in (("--batch-size", args.batch_size), ("--steps", args.steps), ("--rank", args.rank),
                        ("--pack", args.pack)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    try:
        record = run(args.mode, args.batch_size, args.steps, args.warmup, args.device, args.rank, args.threads,
                     args.sample_problems, not args.no_peak, args.precision, args.compile, args.cuda_graphs,
                     args.pack, not args.no_aot, args.gradients,
                     (args.barrier[0], int(args.barrier[1])) if args.barrier else None)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps(record))
    else:
        for key, value in record.items():
            print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
