"""The closed-form derivatives (diffusion_lib.ired.closed_form, gradients.weight_grads) equal autograd on the
module, in float64.

The training gradient itself is checked against autograd on the module (and against the functional
gradient) in tests/ired/test_functional.py, for every mode, mining and not.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from diffusion_lib.ired import closed_form
from diffusion_lib.train.flops import _flops_per_sample
from diffusion_lib.ired.data import inverse_problems
from diffusion_lib.ired.diffusion import build_diffusion
from diffusion_lib.ired.gradients import weight_grads
from tests.workflow_helpers import ROOT

RANK = 3


def _trained_looking(mode="none"):
    """A small diffusion whose weights are perturbed away from their initialisation (so every term,
    the FiLM gains included, is exercised)."""
    torch.manual_seed(0)
    d = build_diffusion(RANK, 10, {"mode": mode, "opt_steps": 3})
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return d


def _problems(n=24):
    A, Y = inverse_problems(n, RANK, 0.5, torch.Generator().manual_seed(1))
    return A.to(torch.get_default_dtype()), Y.to(torch.get_default_dtype())


def test_the_energy_and_its_gradient_equal_the_modules(float64):
    d = _trained_looking()
    A, Y = _problems()
    t = torch.arange(A.shape[0]) % 10
    frozen = closed_form.Frozen(closed_form.Weights.of(d.model.ebm), d.timesteps)
    rows = frozen.at(t, frozen.inputs(A))
    for y in (Y, 3 * torch.randn_like(Y)):
        e, g = rows.energy_and_grad(y)
        e_ref, g_ref = d.model(A, y, t, return_both=True)
        torch.testing.assert_close(e, e_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(rows.energy(y), e_ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(rows.energy(Y), rows.energy(2 * Y))  # the comparison can fail


def test_rows_at_one_timestep_fold_the_time_modulation_into_the_weights_and_equal_the_modules(float64):
    d = _trained_looking()
    A, Y = _problems()
    frozen = closed_form.Frozen(closed_form.Weights.of(d.model.ebm), d.timesteps)
    c1 = frozen.inputs(A)
    y = 3 * torch.randn_like(Y)
    for step in (0, 4, 9):
        t = torch.full((A.shape[0],), step)
        folded = frozen.at(t, c1, step)
        assert folded.q2 is None and not torch.equal(folded.w.w2, frozen.w.w2)
        e_ref, g_ref = d.model(A, y, t, return_both=True)
        e, g = folded.energy_and_grad(y)
        torch.testing.assert_close(e, e_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(folded.energy(y), e_ref, rtol=1e-12, atol=1e-12)


def test_every_weight_gradient_equals_autograd_for_a_loss_of_the_gradient_and_the_energy(float64):
    """∂L/∂θ for L = Σ c·∇_y E(y_t) + Σ b·E(y±) with random c, b: every weight, time path included."""
    d = _trained_looking("random")
    ebm = d.model.ebm
    A, Y = _problems()
    n = A.shape[0]
    t = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2))
    y = torch.cat((Y, Y + torch.randn_like(Y), 2 * torch.randn_like(Y)))
    c, b = torch.randn_like(Y), torch.randn(2 * n, dtype=Y.dtype)
    weights = list(ebm.parameters())
    loss = (c * d.model(A, y[:n], t)).sum() + (b * d.model(torch.cat((A, A)), y[n:], torch.cat((t, t)),
                                                            return_energy=True)).sum()
    reference = torch.autograd.grad(loss, weights)
    w = closed_form.Weights.of(ebm).detached()
    table = closed_form.TimeTable.of(w, d.timesteps)
    rows = closed_form.Rows.of(w, table, t, closed_form.inputs(w, A)).repeat(3)
    a = closed_form.forward(rows, y)
    grads = weight_grads(rows, table, torch.cat([t] * 3), A, y, a, closed_form.backward(rows, a.head(n), y.shape[1]),
                         c, b)
    for name, ours, theirs in zip(closed_form.NAMES, grads, reference, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12, msg=name)
    assert closed_form.NAMES == tuple(name for name, _ in ebm.named_parameters())


@pytest.mark.parametrize("n_inner", [0, 3])
def test_sampling_and_the_opt_step_equal_the_module_path(n_inner, float64):
    d = _trained_looking("adversarial")
    A, Y = _problems()
    runs = {}
    for closed in (True, False):
        d.closed_form = closed
        stats: dict = {}
        sample = d.sample(A, n_inner=n_inner, generator=torch.Generator().manual_seed(3), stats=stats)
        t = torch.randint(0, 10, (A.shape[0],), generator=torch.Generator().manual_seed(4))
        moved = d.opt_step(A, Y + torch.randn(Y.shape, generator=torch.Generator().manual_seed(5)), t, step=3, sf=1.0)
        runs[closed] = sample, moved, stats
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(runs[True][1], runs[False][1], rtol=1e-9, atol=1e-12)
    # a proposal that moves y by rounding only has E(y') = E(y) up to rounding: such ties may be
    # decided either way (they cannot move the sample, which is equal above)
    closed, module = ({k: v.item() for k, v in r[2].items()} for r in (runs[True], runs[False]))
    assert closed.get("proposed") == module.get("proposed")
    assert abs(closed.get("accepted", 0) - module.get("accepted", 0)) <= 0.05 * module.get("proposed", 0)


def test_the_closed_form_is_used_for_the_ebm_and_can_be_switched_off():
    d = build_diffusion(2, 10)
    t = torch.zeros(3, dtype=torch.long)
    energy_and_grad, _ = d.energy_fields(torch.zeros(3, 4))(t)
    assert isinstance(energy_and_grad.__self__, closed_form.Rows)
    d.closed_form = False
    energy_and_grad, _ = d.energy_fields(torch.zeros(3, 4))(t)
    assert not hasattr(energy_and_grad, "__self__")  # the module, called through the wrapper protocol


def test_the_reference_flops_that_budgets_are_computed_from_are_unchanged():
    """Compute-matched rungs are computed from the FLOPs of the reference (autograd) formulation,
    recorded before the closed form existed (commit b0fc803): faster training must not move them."""
    recorded = {"none": 8486051.0, "random": 18702594.0, "adversarial": 25967993.5}
    for mode, flops in recorded.items():
        assert _flops_per_sample(json.dumps({"mode": mode}), 4, 10) == flops
    assert _flops_per_sample(json.dumps({"mode": "adversarial", "mine_every": 3, "opt_steps": 3}), 4, 10) == \
        pytest.approx(22053861.333333332, rel=1e-15)


def test_malloc_keeps_freed_memory_unless_the_user_tunes_it():
    code = "from diffusion_lib.jobs.runtime import keep_freed_memory; print(keep_freed_memory())"
    run = lambda env: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                     env=env, check=True).stdout.strip()
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    assert run(base) == ("True" if sys.platform == "linux" else "False")
    assert run({**base, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}) == "False"
