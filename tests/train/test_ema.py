"""The engine's EMA follows ema-pytorch's EMA bit for bit, without reading the device."""
from __future__ import annotations

import pytest
import torch
from ema_pytorch import EMA

from diffusion_lib.ired.diffusion import build_diffusion
from diffusion_lib.train.ema import EMASchedule, ema_decay, ema_update_
from diffusion_lib.train.host_reads import count_host_reads


def test_decay_schedule_equals_ema_pytorch_for_every_step():
    model = torch.nn.Linear(2, 2)
    for power, after, beta in ((2 / 3, 100, 0.995), (0.5, 0, 0.999), (0.75, 10, 0.9)):
        ref = EMA(model, beta=beta, update_after_step=after, power=power, include_online_model=False)
        for step in range(0, 6000, 7):
            ref.step.fill_(step)
            assert ema_decay(step, beta=beta, update_after_step=after, power=power) == ref.get_current_decay(), step


@pytest.mark.parametrize("update_every, after", [(1, 0), (10, 100), (3, 5)])
def test_the_stacked_ema_equals_ema_pytorch_bitwise(update_every, after):
    torch.manual_seed(0)
    model = build_diffusion(3, 10, {"mode": "adversarial"})
    ref = EMA(model, beta=0.995, update_every=update_every, update_after_step=after, power=2 / 3,
              include_online_model=False)
    schedule = EMASchedule(0.995, update_every, after, 2 / 3)
    weights = [p.detach()[None] for p in model.parameters()]  # one run, stacked: views of the model's weights
    ours = [w.clone() for w in weights]
    for step in range(260):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.01)
        ref.update()
        ema_update_(ours, weights, schedule, step)
    for (name, a), b in zip(ref.ema_model.named_parameters(), ours):
        assert torch.equal(a, b[0]), name


def test_the_ema_reads_nothing_from_the_device_and_moves_only_when_scheduled():
    schedule = EMASchedule(0.995, update_every=4, update_after_step=2, power=2 / 3)
    assert [schedule.weight(k) for k in range(4)] == [1.0, None, None, None]
    assert schedule.weight(4) == pytest.approx(1 - ema_decay(5, beta=0.995, update_after_step=2, power=2 / 3))
    weights, ema = [torch.ones(2, 3)], [torch.zeros(2, 3)]
    with count_host_reads() as reads:
        for step in range(20):
            ema_update_(ema, weights, schedule, step)
    assert sum(reads.values()) == 0, reads
