"""Which derivatives compute a network's gradients (issue 32.4): the closed form only for method §3's
network (closed_form.supports), checked against autograd at every job's first step; any other
network (another activation, an extra layer) trains, mines and samples through autograd; and
``train.gradients`` chooses (auto / closed_form / autograd)."""
from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import torch

from diffusion_lib.ired import closed_form, diffusion
from diffusion_lib.train import engine as engine_module, step
from diffusion_lib.plan.config import ConfigError, load_config
from diffusion_lib.ired.data import inverse_problems, make_heldout
from diffusion_lib.ired.diffusion import build_diffusion
from diffusion_lib.train.engine import Engine
from diffusion_lib.ired.gradients import clip_by_total_norm
from diffusion_lib.plan.layout import Layout
from diffusion_lib.settings.mining import MiningConfig
from diffusion_lib.settings.run_config import TrainConfig

RANK = 3
#: the curve's columns that the maths decides (not timings)
MATHS = ("step", "lr", "loss", "loss_mse", "loss_energy", "energy_gap", "grad_norm", "clip_frac", "mine_accept",
         "val_mse_ema")
OTHER_NETWORKS = [{"activation": "gelu"}, {"layers": 3}, {"activation": "tanh", "layers": 1}]


def _cfg(model=None, **kw):
    model = {f"model_{k}": v for k, v in (model or {}).items()}
    return TrainConfig(steps=4, batch_size=8, lr=1e-3, grad_clip=0.5, rank=RANK, log_every=2, eval_every=2,
                       checkpoint_every=2, val_size=4, val_inner_steps=2, measure_flops=False, **model, **kw)


def _engine(cfg, mode="adversarial", seeds=(0,)):
    """An engine of one run, or of a pack of ``seeds``."""
    return Engine.seeded([dataclasses.replace(cfg, seed=s) for s in seeds], {"mode": mode, "opt_steps": 2},
                         make_heldout(4, RANK, 0.5, seed=1), progress=False)


def test_the_closed_form_knows_which_networks_it_describes():
    assert closed_form.supports(build_diffusion(RANK, 10).model.ebm) is None
    assert closed_form.supports(build_diffusion(RANK, 10, model={"hidden": 16}).model.ebm) is None  # any width
    reasons = [closed_form.supports(build_diffusion(RANK, 10, model=m).model.ebm) for m in OTHER_NETWORKS]
    assert "activation is 'gelu'" in reasons[0] and "3 modulated layers" in reasons[1] and reasons[2]
    with pytest.raises(ValueError, match="closed-form derivatives do not apply"):
        closed_form.Weights.of(build_diffusion(RANK, 10, model={"activation": "gelu"}).model.ebm)

    class Edited(type(build_diffusion(RANK, 10).model.ebm)):
        def forward(self, x, y, t):
            return super().forward(x, y, t) * 2

    assert "not SPEC §3's EBM" in closed_form.supports(Edited(RANK * RANK, RANK * RANK))


@pytest.mark.parametrize("model", OTHER_NETWORKS)
def test_another_network_trains_through_autograd_and_matches_plain_autograd(model, float64, caplog):
    """The engine's first update of a network the closed form does not know equals autograd on the
    module (loss.backward of module_loss, clipped), in float64, on a mining step; training goes on."""
    with caplog.at_level(logging.INFO, logger="diffusion_lib.train.step"):
        engine = _engine(_cfg(model))
    assert "training gradient: autograd (torch.func)" in caplog.text
    assert not engine.template.uses_closed_form()
    reference = build_diffusion(RANK, 10, {"mode": "adversarial", "opt_steps": 2}, model)
    reference.load_state_dict(engine.template.state_dict())
    draws = engine.draw([True])
    grads, parts = engine.update.gradients(draws, mined=True)
    A, Y, t, xi, xi_neg = (d[0] for d in draws)
    loss, ref_parts = reference.module_loss(A, Y, t, xi, xi_neg, mined=True)
    loss.backward()
    want, _ = clip_by_total_norm([p.grad for p in reference.model.ebm.parameters()], 0.5)
    for got, ref in zip(grads, want, strict=True):
        torch.testing.assert_close(got[0], ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(parts["loss"][0], ref_parts["loss"], rtol=1e-9, atol=1e-12)
    (result,) = engine.train()
    assert result.status == "completed" and math.isfinite(result.curve[-1]["val_mse_ema"])


@pytest.mark.parametrize("model", OTHER_NETWORKS[:2])
def test_another_network_samples_and_mines_through_autograd(model, float64):
    """Sampling and the opt step of a network the closed form does not know go through the module
    (autograd) and equal a plain autograd descent written here."""
    d = build_diffusion(RANK, 10, {"mode": "adversarial"}, model)
    A, Y = (x.to(torch.float64) for x in inverse_problems(6, RANK, 0.5, torch.Generator().manual_seed(1)))
    energy_and_grad, _ = d.energy_fields(A)(torch.zeros(6, dtype=torch.long))
    assert not hasattr(energy_and_grad, "__self__")  # not closed_form.Rows
    t = torch.full((6,), 4, dtype=torch.long)
    moved = d.opt_step(A, Y, t, step=1, sf=1.0)
    y = Y.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(d.model.ebm(A, y, t).sum(), y)
    bound = 2.0 * d.sqrt_alphas_cumprod[4]
    proposal = (Y - d.opt_step_size[4] * g).clamp(-bound, bound)
    keep = (d.model.ebm(A, proposal, t) <= d.model.ebm(A, Y, t))[:, None]
    torch.testing.assert_close(moved, torch.where(keep, proposal, Y), rtol=1e-9, atol=1e-12)
    assert torch.isfinite(d.sample(A, n_inner=2, generator=torch.Generator().manual_seed(0))).all()


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_the_first_step_guard_passes_for_the_spec_network(seeds, caplog):
    """One run, and a pack (the closed form mapped over its runs, the guard on its first run)."""
    with caplog.at_level(logging.INFO):
        engine = _engine(_cfg(), seeds=seeds)
        results = engine.train()
    assert engine.template.uses_closed_form()
    assert [r.status for r in results] == ["completed"] * len(seeds)
    assert "training gradient: the closed form" in caplog.text
    assert ("a pack of 2 runs mapped over by torch.func.vmap" in caplog.text) == (len(seeds) == 2)
    assert caplog.text.count("closed-form gradient checked against autograd at the first step") == 1


def test_a_packs_guard_checks_its_first_run_that_trains(monkeypatch):
    """A pack whose first run is frozen at its first step (resumed ahead of the others) draws zeros for
    it: the guard checks the next run's draws and weights instead of that degenerate point."""
    from diffusion_lib.ired import gradients

    seen = []
    real = gradients.check_training_gradient

    def spy(diffusion, inp, *draws, weights=None, **kwargs):
        seen.append((inp.clone(), {k: v.detach().clone() for k, v in weights.items()}))
        return real(diffusion, inp, *draws, weights=weights, **kwargs)

    monkeypatch.setattr(gradients, "check_training_gradient", spy)
    engine = _engine(_cfg(), seeds=(0, 1))
    before = {name: p.clone() for name, p in zip(engine.names, engine.stack.params)}
    engine.step_once(0, [False, True])
    ((inp, weights),) = seen
    assert inp.abs().sum() > 0  # run 1's problems, not run 0's zeros
    assert all(torch.equal(weights[name], p[1]) for name, p in before.items())  # run 1's weights
    assert not all(torch.equal(weights[name], p[0]) for name, p in before.items())


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_the_first_step_guard_stops_a_closed_form_that_does_not_describe_the_network(seeds, monkeypatch):
    """Were supports() wrong (here: told to accept everything), the closed form would compute SiLU's
    derivatives for a GELU network: the guard refuses at the first step, before any update (of one run
    or of a pack)."""
    for module in (closed_form, diffusion, step, engine_module):
        monkeypatch.setattr(module, "supports", lambda ebm: None)
    engine = _engine(_cfg({"activation": "gelu"}), seeds=seeds)
    before = [p.clone() for p in engine.stack.params]
    with pytest.raises(RuntimeError, match="disagrees with autograd"):
        engine.train()
    assert all(torch.equal(a, b) for a, b in zip(before, engine.stack.params))
    with pytest.raises(RuntimeError, match="energy gradient disagrees with autograd"):
        d = build_diffusion(RANK, 10, model={"activation": "gelu"})
        d.sample(torch.zeros(2, RANK * RANK), n_inner=0)


def test_train_gradients_autograd_trains_the_spec_network_to_the_same_numbers(float64, caplog):
    with caplog.at_level(logging.INFO, logger="diffusion_lib.train.step"):
        closed, auto = _engine(_cfg()), _engine(_cfg(gradients="autograd"))
        curves = [e.train()[0].curve for e in (closed, auto)]
    assert closed.template.uses_closed_form() and not auto.template.uses_closed_form()
    assert "autograd (torch.func): train.gradients: autograd" in caplog.text
    for a, b in zip(*curves, strict=True):
        assert a.keys() == b.keys()
        for key in MATHS:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12, nan_ok=True), key


def test_train_gradients_closed_form_refuses_a_network_it_does_not_describe():
    with pytest.raises(ValueError, match="closed_form applies only to SPEC §3"):
        _cfg({"activation": "gelu"}, gradients="closed_form")
    base = {"name": "t", "study": "t", "seeds": [0], "strategies": {"baseline": {"mode": "none"}}}
    with pytest.raises(ConfigError, match="'train.gradients': closed_form applies only"):
        load_config({**base, "train": {"gradients": "closed_form", "model": {"layers": 3}}})
    load_config({**base, "train": {"gradients": "autograd", "model": {"layers": 3}}})  # fine


def test_the_architecture_keys_a_run_only_where_it_differs_from_the_spec():
    mining = MiningConfig(mode="none")
    default = TrainConfig().identity(mining)
    assert not any(k.startswith("model_") for k in default)  # keys as before train.model existed
    assert TrainConfig(model_hidden=512).identity(mining) == default
    assert TrainConfig(model_activation="gelu").identity(mining)["model_activation"] == "gelu"
    assert TrainConfig(gradients="autograd").identity(mining) == default  # how, not what
    cfg = {"name": "t", "study": "t", "seeds": [0], "strategies": {"baseline": {"mode": "none"}}}
    runs = [Layout(load_config({**cfg, "train": train})).runs[0].run
            for train in ({}, {"model": {"hidden": 512}}, {"model": {"hidden": 64}}, {"gradients": "autograd"})]
    assert runs[0] == runs[1] == runs[3] != runs[2]


def test_a_model_file_remembers_its_architecture(tmp_path):
    from diffusion_lib.train import checkpoint

    d = build_diffusion(RANK, 10, model={"layers": 3, "activation": "gelu", "hidden": 16})
    checkpoint.save_model(tmp_path / "m.pt", rank=RANK, timesteps=10, mining={"mode": "none"}, model=d, ema=d,
                          status={"status": "completed"})
    ema, raw, _ = checkpoint.load_model(tmp_path / "m.pt", torch.device("cpu"))
    assert ema.model.ebm.spec == {"hidden": 16, "layers": 3, "activation": "gelu"}
    for a, b in zip(raw.parameters(), d.parameters(), strict=True):
        assert torch.equal(a, b)
