"""Is TF32 safe for this model? Measurements that decide ``train.precision`` before it becomes a default.

TF32 matmuls (Ampere and later GPUs) keep float32's range but round both inputs to a 10-bit
mantissa. Two places could care: the loss gradient (a second derivative through the energy), and
the opt step's accept test, which compares two nearly equal energies, E(y') <= E(y).
:func:`tf32_report` measures both against a float64 reference on a given model and batch:

* ``grad_cosine``: cosine between the parameter gradient at the tested precision and in float64
  (fp32 for comparison);
* ``accept_flip_rate``: the share of opt-step accept decisions that differ from float64's.

On a GPU the tested precision is real TF32; on a CPU it is emulated by :class:`EmulatedTF32`,
which rounds the inputs of every matmul (forward and backward) to TF32's mantissa with
round-to-nearest-even, as the tensor cores do, and accumulates in float32.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffusion_lib.ired.diffusion import GaussianDiffusion1D, _gather
from diffusion_lib.ired.functional import draw_noise, energy, energy_and_grad, loss

aten = torch.ops.aten
MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32) rounded to TF32: 10 explicit mantissa bits, nearest, ties to even."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    lsb = (bits >> 13) & 1
    rounded = (bits + 0x0FFF + lsb) & ~0x1FFF
    finite = torch.isfinite(x)
    return torch.where(finite, rounded.view(torch.float32), x)


class EmulatedTF32(TorchDispatchMode):
    """Within the block, every float32 matmul (forward and backward) sees TF32-rounded inputs."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in MATMULS:
            args = tuple(round_to_tf32(a) if isinstance(a, torch.Tensor) and a.dim() >= 2 else a for a in args)
        return func(*args, **kwargs)


def _cast(diffusion: GaussianDiffusion1D, dtype: torch.dtype) -> GaussianDiffusion1D:
    d = copy.deepcopy(diffusion)
    d.model.ebm.to(dtype)
    return d


def _context(precision: str, device: torch.device) -> Any:
    """A context computing float32 matmuls at ``precision`` ('fp32' or 'tf32') on ``device``."""
    if precision == "fp32":
        return _Flag(False) if device.type == "cuda" else contextlib.nullcontext()
    return _Flag(True) if device.type == "cuda" else EmulatedTF32()


class _Flag:
    """Sets ``torch.backends.cuda.matmul.allow_tf32`` within the block."""

    def __init__(self, value: bool):
        self.value, self.saved = value, False

    def __enter__(self) -> None:
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.value

    def __exit__(self, *exc: Any) -> None:
        torch.backends.cuda.matmul.allow_tf32 = self.saved


def _grad(diffusion: GaussianDiffusion1D, A: torch.Tensor, Y: torch.Tensor, noise: tuple[torch.Tensor, ...],
          mined: bool) -> torch.Tensor:
    params = dict(diffusion.model.ebm.named_parameters())
    dtype = next(iter(params.values())).dtype
    A, Y = A.to(dtype), Y.to(dtype)
    t, xi, *rest = noise
    grads = torch.func.grad(lambda p: loss(diffusion, p, A, Y, t, xi.to(dtype), rest[0].to(dtype) if rest else None,
                                           mined)[0])(params)
    return torch.cat([g.detach().flatten().double() for g in grads.values()])


def _accept_decisions(diffusion: GaussianDiffusion1D, A: torch.Tensor, Y: torch.Tensor, t: torch.Tensor,
                      start: torch.Tensor, sf: float) -> torch.Tensor:
    """E(y - sf·η_t·∇E) <= E(y) from one shared starting point, per problem (the accept test)."""
    ebm = diffusion.model.ebm
    params = {k: v.detach() for k, v in ebm.named_parameters()}
    dtype = next(iter(params.values())).dtype
    A, y = A.to(dtype), start.to(dtype)
    e, g = energy_and_grad(ebm, params, A, y, t)
    bound = diffusion.clamp * _gather(diffusion.sqrt_alphas_cumprod, t).to(dtype)
    step = (sf * _gather(diffusion.opt_step_size, t)).to(dtype)
    proposal = torch.maximum(torch.minimum(y - step * g, bound), -bound)
    return energy(ebm, params, A, proposal, t) <= e


def tf32_report(diffusion: GaussianDiffusion1D, A: torch.Tensor, Y: torch.Tensor, *, seed: int = 0,
                sf: float = 1.0, sigma: float = 1.0, settle_steps: int = 5) -> dict[str, Any]:
    """Gradient cosine and accept-flip rate of fp32 and TF32 against float64 (see the module docstring).

    ``A``, ``Y``: a batch of problems on the model's device. The accept test is taken where it is
    hard: from q(y0, t, σ·ξ) at random t, ``settle_steps`` float64 opt steps first descend towards
    the energy's minimum (as inference's inner loop does), so the next proposal's energy is close
    to the current one; then each precision decides whether to accept that proposal.
    """
    device = A.device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        noise = draw_noise(diffusion, Y)
    mined = diffusion.mining.mines
    t = torch.randint(0, diffusion.timesteps, (A.shape[0],), device=device, generator=gen)
    start = diffusion.q_sample(Y, t, sigma * torch.randn(Y.shape, device=device, generator=gen))
    ref = _cast(diffusion, torch.float64)
    start = ref.opt_step(A.double(), start.double(), t, step=settle_steps, sf=sf)
    g64, acc64 = _grad(ref, A, Y, noise, mined), _accept_decisions(ref, A, Y, t, start, sf)
    out: dict[str, Any] = {"device": str(device), "problems": int(A.shape[0]),
                           "tf32_kind": "hardware" if device.type == "cuda" else "emulated"}
    model32 = _cast(diffusion, torch.float32)
    for precision in ("fp32", "tf32"):
        with _context(precision, device):
            g = _grad(model32, A, Y, noise, mined)
            acc = _accept_decisions(model32, A, Y, t, start.float(), sf)
        cosine = float(torch.dot(g, g64) / (g.norm() * g64.norm()))
        out[precision] = {"grad_cosine": cosine, "grad_rel_error": float((g - g64).norm() / g64.norm()),
                          "accept_flip_rate": float((acc != acc64).float().mean()),
                          "accept_rate": float(acc.float().mean())}
    out["accept_rate_float64"] = float(acc64.float().mean())
    out["all_finite"] = all(math.isfinite(out[p]["grad_cosine"]) for p in ("fp32", "tf32"))
    return out
