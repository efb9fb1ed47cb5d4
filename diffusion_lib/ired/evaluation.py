"""Evaluation of a trained model on fixed held-out sets (method §7).

For each held-out set it computes, with the EMA model:

* per-problem solution quality for every requested number of inference inner steps: MSE over
  entries, reconstruction residual ‖AŶ - I‖_F and relative error ‖Ŷ - Y‖_F / ‖Y‖_F (kept per
  problem so the report can run paired tests across strategies on the same problems);
* inference wall time per problem (with the default inner loop);
* the acceptance rate of the inference inner steps (accepted / proposed energy-descent steps);
* energy-landscape quality: for each t, the fraction of pairs with E⁺ < E⁻ (ranking accuracy) and
  the mean gap E⁻ - E⁺, for a set of probes with one fixed recipe for every strategy:

  - ``random σ``: method §5's random negative, ŷ⁻_0 = clamp((y0 + σ·r_t·ξ)) re-noised with the
    positive's noise ξ (r_t = √(1-ᾱ_t)/√ᾱ_t). Its distance to the positive grows with σ·r_t, not
    with σ - 1, so even σ close to 1 is ranked perfectly by every trained model: a sanity check,
    not a discriminating probe;
  - ``near-miss ρ``: the clean solution perturbed by ρ times its RMS entry, ŷ⁻_0 = y0 + ρ·rms(y0)·ζ,
    re-noised with ξ: is the energy sharp around the true answer?
  - ``adversarial``: a random negative from σ descended by the opt step (5 steps by default, the
    inference inner-loop length, where the adversarial arm trains with 2 from σ = 3). The descent
    follows the scored model's own energy, so unlike the others its negatives differ between models:
    it shows whether a model's descent finds points it ranks below the truth, not which model has
    the better landscape.

All sampling noise comes from generators seeded by ``EvalSettings.seed``: the same model and
settings give the same numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .data import Heldout
from .diffusion import GaussianDiffusion1D


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation knobs. ``inner_steps`` lists every inner-loop length to score (test-time compute);
    ``default_inner`` (always scored) is the headline setting."""

    default_inner: int = 5
    inner_scale: float = 1.0
    inner_steps: tuple[int, ...] = (0, 1, 2, 5, 10)
    batch_size: int = 1024
    landscape_size: int = 256
    landscape_noise_scales: tuple[float, ...] = (3.0,)
    landscape_near_miss: tuple[float, ...] = (0.1, 0.3)
    landscape_adv_noise_scale: float = 1.5
    landscape_opt_steps: int = 5
    landscape_scale_factor: float = 1.0
    seed: int = 0
    landscape: bool = True  # off for a budget-ladder rung, which is scored on its endpoints only

    @property
    def probes(self) -> list[tuple[str, str, float, int]]:
        """(name, kind, size, opt steps) of each landscape probe (see the module docstring)."""
        probes = [(f"random σ={s:g}", "random", s, 0) for s in self.landscape_noise_scales]
        probes += [(f"near-miss ρ={r:g}", "near_miss", r, 0) for r in self.landscape_near_miss]
        k, s = self.landscape_opt_steps, self.landscape_adv_noise_scale
        return probes + [(f"adversarial σ={s:g}, {k} steps", "adversarial", s, k)]

    @property
    def all_inner_steps(self) -> list[int]:
        return sorted({0, self.default_inner, *self.inner_steps})


@torch.no_grad()
def predict(diffusion: GaussianDiffusion1D, heldout: Heldout, n_inner: int, inner_scale: float = 1.0,
            batch_size: int = 1024, seed: int = 0, stats: dict[str, torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, float]:
    """Sample predictions for every problem; returns (Ŷ on CPU, wall seconds). ``stats`` collects the
    inner steps' acceptance counts (see :meth:`GaussianDiffusion1D.opt_step`)."""
    device = next(diffusion.buffers()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    preds = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for lo in range(0, len(heldout), batch_size):
        A = heldout.A[lo:lo + batch_size].to(device)
        preds.append(diffusion.sample(A, n_inner=n_inner, inner_scale=inner_scale, generator=gen, stats=stats))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return torch.cat(preds).cpu(), seconds


def solution_metrics(pred: torch.Tensor, heldout: Heldout) -> dict[str, torch.Tensor]:
    """Per-problem MSE, residual ‖AŶ - I‖_F and relative error ‖Ŷ - Y‖_F/‖Y‖_F (float64, shape (N,))."""
    n = heldout.rank
    P, Y = pred.double(), heldout.Y.double()
    A = heldout.A.double().reshape(-1, n, n)
    eye = torch.eye(n, dtype=torch.float64)
    residual = torch.linalg.matrix_norm(A @ P.reshape(-1, n, n) - eye)
    err = P - Y
    return {"mse": err.pow(2).mean(dim=1), "residual": residual,
            "rel_err": err.norm(dim=1) / Y.norm(dim=1)}


@torch.no_grad()
def energy_landscape(diffusion: GaussianDiffusion1D, heldout: Heldout, settings: EvalSettings) -> list[dict[str, Any]]:
    """Rows (t, probe, ranking accuracy P(E⁺ < E⁻), mean gap E⁻ - E⁺) on ``landscape_size`` problems."""
    device = next(diffusion.buffers()).device
    sub = heldout.subset(settings.landscape_size).to(device)
    gen = torch.Generator(device=device).manual_seed(settings.seed + 1)
    rows = []
    for step in range(diffusion.timesteps):
        t = torch.full((len(sub),), step, dtype=torch.long, device=device)
        noise = torch.randn(sub.Y.shape, generator=gen, device=device)
        for name, kind, size, opt_steps in settings.probes:
            if kind == "near_miss":
                rms = sub.Y.pow(2).mean(dim=1, keepdim=True).sqrt()
                shifted = sub.Y + size * rms * torch.randn(sub.Y.shape, generator=gen, device=device)
                pos, neg = diffusion.q_sample(sub.Y, t, noise), diffusion.q_sample(shifted, t, noise)
            else:
                pos, neg = diffusion.make_negative(sub.A, sub.Y, t, noise, adversarial=kind == "adversarial",
                                                   opt_steps=opt_steps, scale_factor=settings.landscape_scale_factor,
                                                   noise_scale=size)
            e_pos = diffusion.model(sub.A, pos, t, return_energy=True)
            e_neg = diffusion.model(sub.A, neg, t, return_energy=True)
            rows.append({"t": step, "negative": name,
                         "rank_acc": (e_pos < e_neg).double().mean().item(),
                         "gap_mean": (e_neg - e_pos).double().mean().item()})
    return rows


@dataclass
class SetEvaluation:
    """Everything measured on one held-out set."""

    name: str
    per_problem: dict[int, dict[str, torch.Tensor]] = field(repr=False)  # inner steps -> metrics
    seconds: dict[int, float]
    landscape: list[dict[str, Any]]
    accept_rate: dict[int, float] = field(default_factory=dict)  # inner steps -> accepted / proposed

    def summary(self, inner: int) -> dict[str, float]:
        m = self.per_problem[inner]
        n = len(m["mse"])
        return {"mse": m["mse"].mean().item(), "residual_mean": m["residual"].mean().item(),
                "residual_median": m["residual"].median().item(), "rel_err_mean": m["rel_err"].mean().item(),
                "infer_ms_per_problem": 1000 * self.seconds[inner] / n,
                "accept_rate": self.accept_rate.get(inner, float("nan"))}


def evaluate_set(diffusion: GaussianDiffusion1D, heldout: Heldout, settings: EvalSettings, name: str = "") -> SetEvaluation:
    """Score ``diffusion`` on ``heldout`` for every inner-step count in ``settings`` plus the landscape."""
    per_problem, seconds, accept = {}, {}, {}
    for inner in settings.all_inner_steps:
        stats: dict[str, torch.Tensor] = {}
        pred, secs = predict(diffusion, heldout, inner, settings.inner_scale, settings.batch_size, settings.seed,
                             stats=stats)
        per_problem[inner] = solution_metrics(pred, heldout)
        seconds[inner] = secs
        if stats:
            accept[inner] = (stats["accepted"] / stats["proposed"]).item()
    landscape = energy_landscape(diffusion, heldout, settings) if settings.landscape else []
    return SetEvaluation(name, per_problem, seconds, landscape, accept)


def per_problem_rows(evaluation: SetEvaluation) -> list[dict[str, Any]]:
    """Long-format rows (set, inner_steps, problem, mse, residual, rel_err) for paired tests."""
    rows = []
    for inner, metrics in evaluation.per_problem.items():
        cols = {k: v.tolist() for k, v in metrics.items()}
        for i in range(len(cols["mse"])):
            rows.append({"set": evaluation.name, "inner_steps": inner, "problem": i,
                         **{k: cols[k][i] for k in cols}})
    return rows
