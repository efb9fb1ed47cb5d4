"""DeviceEMA follows ema-pytorch's EMA bit for bit, without reading the device."""
from __future__ import annotations

import pytest
import torch
from ema_pytorch import EMA

from diffusion_lib.ema import DeviceEMA, ema_decay
from diffusion_lib.syncs import count_host_reads
from diffusion_lib.training import build_diffusion


def test_decay_schedule_equals_ema_pytorch_for_every_step():
    model = torch.nn.Linear(2, 2)
    for power, after, beta in ((2 / 3, 100, 0.995), (0.5, 0, 0.999), (0.75, 10, 0.9)):
        ref = EMA(model, beta=beta, update_after_step=after, power=power, include_online_model=False)
        for step in range(0, 6000, 7):
            ref.step.fill_(step)
            assert ema_decay(step, beta=beta, update_after_step=after, power=power) == ref.get_current_decay(), step


@pytest.mark.parametrize("update_every, after", [(1, 0), (10, 100), (3, 5)])
def test_device_ema_state_equals_ema_pytorch_bitwise(update_every, after):
    torch.manual_seed(0)
    model = build_diffusion(3, 10, {"mode": "adversarial"})
    ref = EMA(model, beta=0.995, update_every=update_every, update_after_step=after, power=2 / 3,
              include_online_model=False)
    ours = DeviceEMA(model, beta=0.995, update_every=update_every, update_after_step=after, power=2 / 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(260):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.01)
        opt.step()
        ref.update()
        ours.update()
    for (name, a), (_, b) in zip(ref.ema_model.state_dict().items(), ours.ema_model.state_dict().items()):
        assert torch.equal(a, b), name
    assert ours.step == int(ref.step)


def test_device_ema_update_reads_nothing_from_the_device_and_round_trips():
    model = build_diffusion(3, 10, {"mode": "none"})
    ema = DeviceEMA(model, update_every=1, update_after_step=2)
    with count_host_reads() as reads:
        for _ in range(20):
            ema.update()
    assert sum(reads.values()) == 0, reads
    other = DeviceEMA(build_diffusion(3, 10, {"mode": "none"}))
    other.load_state_dict(ema.state_dict())
    assert other.step == 20 and all(torch.equal(a, b) for a, b in zip(other.ema_model.parameters(),
                                                                     ema.ema_model.parameters()))
    with pytest.raises(ValueError, match="DeviceEMA"):
        other.load_state_dict({"step": 1})
