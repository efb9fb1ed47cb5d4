"""TF32 checks that run on a CPU: the rounding, its emulation, and the report that decides the default."""
from __future__ import annotations

import torch

from diffusion_lib.ired.data import inverse_problems
from tools.precision import EmulatedTF32, round_to_tf32, tf32_report
from diffusion_lib.ired.diffusion import build_diffusion


def test_round_to_tf32_keeps_ten_mantissa_bits_ties_to_even():
    one = torch.tensor(1.0)
    ulp = 2.0 ** -10  # TF32's spacing just above 1
    x = torch.tensor([1.0 + ulp / 4, 1.0 + 3 * ulp / 4, 1.0 + ulp / 2, 1.0 + 3 * ulp / 2, -2.5, float("inf")])
    got = round_to_tf32(x)
    assert got.tolist() == [1.0, 1.0 + ulp, 1.0, 1.0 + 2 * ulp, -2.5, float("inf")]
    assert round_to_tf32(one.double()).dtype == torch.float64  # other dtypes untouched


def test_emulated_tf32_rounds_matmul_inputs_in_forward_and_backward():
    torch.manual_seed(0)
    a = torch.randn(8, 8, requires_grad=True)
    b = torch.randn(8, 8)
    with EmulatedTF32():
        out = a @ b
        out.sum().backward()
    assert torch.equal(out, round_to_tf32(a.detach()) @ round_to_tf32(b))
    assert torch.equal(a.grad, torch.ones(8, 8) @ round_to_tf32(b).T)


def test_tf32_report_on_an_adversarial_model():
    torch.manual_seed(0)
    d = build_diffusion(4, 10, {"mode": "adversarial", "opt_steps": 2})
    A, Y = inverse_problems(64, 4, 0.5, torch.Generator().manual_seed(3))
    report = tf32_report(d, A, Y)
    assert report["tf32_kind"] == "emulated" and report["all_finite"]
    assert report["fp32"]["grad_cosine"] > 0.999999
    assert 0.99 < report["tf32"]["grad_cosine"] <= 1.0
    assert report["tf32"]["grad_rel_error"] > report["fp32"]["grad_rel_error"]
    for p in ("fp32", "tf32"):
        assert 0.0 <= report[p]["accept_flip_rate"] <= 1.0
