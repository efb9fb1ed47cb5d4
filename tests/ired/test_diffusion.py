import math

import pytest
import torch
from torch import nn

from diffusion_lib.ired.diffusion import GaussianDiffusion1D, MiningConfig, cosine_schedule
from diffusion_lib.ired.model import EBM, DiffusionWrapper

SPEC_ALPHAS_CUMPROD = [0.97209, 0.89871, 0.78691, 0.64748, 0.49384, 0.34081, 0.20312, 0.09405, 0.02409, 0.00002]


class Quadratic(nn.Module):
    """E(y) = ½‖y - c‖² with an analytic gradient; counts calls. Follows the wrapper protocol."""

    def __init__(self, dim: int, center: float = 0.0):
        super().__init__()
        self.inp_dim = self.out_dim = dim
        self.center = center
        self.calls = 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, inp, y, t, return_energy=False, return_both=False):
        self.calls += 1
        diff = y - self.center
        energy = 0.5 * diff.pow(2).sum(-1) + 0 * self.dummy
        if return_energy and not return_both:
            return energy
        return (energy, diff) if return_both else diff


def test_schedule_matches_spec():
    d = GaussianDiffusion1D(Quadratic(3), timesteps=10)
    assert d.alphas_cumprod.tolist() == pytest.approx(SPEC_ALPHAS_CUMPROD, abs=6e-6)
    assert d.opt_step_size[0].item() == pytest.approx(0.167, abs=1e-3)
    assert d.opt_step_size[-1].item() == pytest.approx(0.999, abs=1e-3)
    betas = cosine_schedule(10)
    # method §4 by hand: f(u) = cos(((u/K) + s)/(1 + s)·π/2)², β_t = 1 − f(t+1)/f(t); the last step's β
    # (f(K) ≈ 0, so β ≈ 1) is the only one the 0.999 clip changes
    f = [math.cos(((u / 10) + 0.008) / 1.008 * math.pi / 2) ** 2 for u in range(11)]
    by_hand = [1 - f[t + 1] / f[t] for t in range(10)]
    assert betas[:-1].tolist() == pytest.approx(by_hand[:-1], rel=1e-12) and max(by_hand[:-1]) < 0.999
    assert by_hand[-1] > 0.999 and betas[-1].item() == 0.999
    expected = betas * torch.sqrt(1 / (1 - torch.cumprod(1 - betas, 0)))
    assert torch.allclose(d.opt_step_size.double(), expected, atol=1e-6)


def test_q_sample():
    d = GaussianDiffusion1D(Quadratic(3), timesteps=10)
    x0, noise, t = torch.ones(2, 3), torch.full((2, 3), 2.0), torch.tensor([0, 5])
    out = d.q_sample(x0, t, noise)
    for i, ti in enumerate(t):
        a = d.alphas_cumprod[ti]
        assert torch.allclose(out[i], a.sqrt() * x0[i] + (1 - a).sqrt() * noise[i])


def test_opt_step_applies_the_scale_on_every_step():
    """Two steps with λ = 0.5 on ½‖y‖²: y₂ = (1 - λη)² y₀ (the reference defect gives (1-λη)(1-η) y₀)."""
    d = GaussianDiffusion1D(Quadratic(4), timesteps=10)
    t = torch.tensor([2, 2])
    y0 = torch.full((2, 4), 0.1)
    eta = d.opt_step_size[2].item()
    out = d.opt_step(None, y0, t, step=2, sf=0.5)
    assert torch.allclose(out, (1 - 0.5 * eta) ** 2 * y0, atol=1e-7)
    assert not torch.allclose(out, (1 - 0.5 * eta) * (1 - eta) * y0, atol=1e-5)


def test_opt_step_clamps_each_problem_with_its_own_t():
    d = GaussianDiffusion1D(Quadratic(3, center=10.0), timesteps=10)
    t = torch.tensor([0, 5, 9])
    out = d.opt_step(None, torch.zeros(3, 3), t, step=1, sf=1.0)
    bounds = 2 * d.sqrt_alphas_cumprod[t]
    for i in range(3):
        expected = min(d.opt_step_size[t[i]].item() * 10.0, bounds[i].item())
        assert torch.allclose(out[i], torch.full((3,), expected), atol=1e-6)
    assert out[2].max() == pytest.approx(bounds[2].item(), rel=1e-5)  # t = 9 bound, not t = 0's


def test_opt_step_rejects_energy_increasing_steps():
    """λ = 3: at t = 0 (η ≈ 0.167) the step shrinks y; at t = 9 (η ≈ 0.999) it overshoots to -2y: rejected."""
    d = GaussianDiffusion1D(Quadratic(2), timesteps=10)
    y0 = torch.full((2, 2), 0.001)
    t = torch.tensor([0, 9])
    out = d.opt_step(None, y0, t, step=1, sf=3.0)
    assert torch.allclose(out[0], (1 - 3 * d.opt_step_size[0]) * y0[0])
    assert torch.equal(out[1], y0[1])


def test_opt_step_reuses_energies():
    """k steps cost k + 1 model calls (the energy of an accepted proposal is not recomputed)."""
    model = Quadratic(2)
    d = GaussianDiffusion1D(model, timesteps=10)
    d.opt_step(None, torch.ones(3, 2) * 0.01, torch.tensor([1, 2, 3]), step=5, sf=1.0)
    assert model.calls == 6


def _counting(d, name):
    calls = []
    original = getattr(d, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    setattr(d, name, wrapper)
    return calls


def _ebm_diffusion(mining):
    return GaussianDiffusion1D(DiffusionWrapper(EBM(4, 4)), timesteps=10, mining_config=mining)


def test_mode_none_builds_no_negatives():
    d = _ebm_diffusion({"mode": "none"})
    negs, opts = _counting(d, "make_negative"), _counting(d, "opt_step")
    loss, parts = d(torch.randn(6, 4), torch.randn(6, 4))
    assert not negs and not opts and parts["loss_energy"] == 0 and torch.isclose(loss, parts["loss_mse"])


def test_mode_random_never_calls_opt_step():
    d = _ebm_diffusion({"mode": "random"})
    negs, opts = _counting(d, "negative_pair"), _counting(d, "opt_step")
    loss, parts = d(torch.randn(6, 4), torch.randn(6, 4))
    assert len(negs) == 1 and negs[0][0][4] is None and not opts  # one pair, nothing descends
    w = d.mining.energy_loss_weight
    assert loss.item() == pytest.approx(parts["loss_mse"].item() + w * parts["loss_energy"].item(), rel=1e-5)


def test_mode_adversarial_calls_opt_step_with_configured_steps_and_scale():
    d = _ebm_diffusion({"mode": "adversarial", "opt_steps": 3, "scale_factor": 0.7})
    opts = _counting(d, "opt_step")
    d(torch.randn(6, 4), torch.randn(6, 4), step=0)
    assert len(opts) == 1 and opts[0][1]["step"] == 3 and opts[0][1]["sf"] == 0.7


def test_mining_frequency():
    d = _ebm_diffusion({"mode": "adversarial", "mine_every": 3})
    opts = _counting(d, "opt_step")
    for step in range(7):
        d(torch.randn(4, 4), torch.randn(4, 4), step=step)
    assert len(opts) == 3  # steps 0, 3, 6


def test_negative_is_renoised_with_the_positive_noise():
    d = _ebm_diffusion({"mode": "random", "noise_scale": 3.0})
    x0, noise, t = torch.zeros(2, 4), torch.randn(2, 4), torch.tensor([3, 3])
    pos, neg = d.make_negative(None, x0, t, noise, adversarial=False)
    a = d.alphas_cumprod[3]
    clean = ((1 - a).sqrt() * 3.0 * noise / a.sqrt()).clamp(-2, 2)
    assert torch.allclose(pos, (1 - a).sqrt() * noise)
    assert torch.allclose(neg, a.sqrt() * clean + (1 - a).sqrt() * noise, atol=1e-6)


@pytest.mark.parametrize("bad, key", [
    ({"mode": "hard"}, "mode"), ({"mode": "random", "opt_steps": 0}, "opt_steps"),
    ({"mode": "random", "scale_factor": -1.0}, "scale_factor"), ({"mode": "random", "noise_scale": 0}, "noise_scale"),
    ({"mode": "random", "energy_loss_weight": -0.1}, "energy_loss_weight"),
    ({"mode": "random", "mine_every": 1.5}, "mine_every"), ({"mode": "random", "steps": 2}, "steps"),
    ({"mode": "random", "scale_factor": math.nan}, "scale_factor"),
])
def test_mining_config_errors_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        MiningConfig.from_mapping(bad)


def test_any_protocol_module_can_be_plugged_in():
    with pytest.raises(TypeError, match="inp_dim"):
        GaussianDiffusion1D(nn.Linear(2, 2))
    d = GaussianDiffusion1D(Quadratic(3), timesteps=10)
    out = d.sample(torch.zeros(4, 3), generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3) and torch.isfinite(out).all()


def test_sampling_is_deterministic_and_bounded():
    d = _ebm_diffusion({"mode": "none"})
    x = torch.randn(5, 4)
    a = d.sample(x, generator=torch.Generator().manual_seed(1))
    b = d.sample(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.abs().max() <= 2.0 + 1e-5


def test_sampling_converges_to_minimiser_of_known_energy():
    """With the true denoiser of a point mass at c (ε̂ = (y - √ᾱ c)/√(1-ᾱ)), sampling returns c."""
    class PointMass(Quadratic):
        def __init__(self, dim, c, alphas_cumprod):
            super().__init__(dim, c)
            self.alphas_cumprod = alphas_cumprod

        def forward(self, inp, y, t, return_energy=False, return_both=False):
            a = self.alphas_cumprod[t][:, None]
            diff = y - a.sqrt() * self.center
            energy = 0.5 * (diff.pow(2) / (1 - a)).sum(-1)
            grad = diff / (1 - a).sqrt()
            if return_energy and not return_both:
                return energy
            return (energy, grad) if return_both else grad

    d = GaussianDiffusion1D(Quadratic(3), timesteps=10)
    d.model = PointMass(3, 0.3, d.alphas_cumprod)
    out = d.sample(torch.zeros(4, 3), n_inner=0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.full((4, 3), 0.3), atol=1e-4)
