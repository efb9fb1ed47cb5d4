"""What the closed form applies to (issue 32.4): the network :mod:`diffusion_lib.ired.closed_form`
writes out by hand is method §3's, with the 16 tensors of :data:`NAMES`; :func:`supports` says why any
other network must be differentiated by autograd instead.
"""
from __future__ import annotations

import torch

from .model import EBM, LAYERS, TIME_DIM

#: the order of ``EBM.named_parameters()``
NAMES = ("time_mlp.0.weight", "time_mlp.0.bias", "time_mlp.2.weight", "time_mlp.2.bias", "fc1.weight", "fc1.bias",
         "layer2.linear.weight", "layer2.linear.bias", "layer2.film.weight", "layer2.film.bias",
         "layer3.linear.weight", "layer3.linear.bias", "layer3.film.weight", "layer3.film.bias",
         "out.weight", "out.bias")


def supports(ebm: torch.nn.Module) -> str | None:
    """Why the derivatives written out here do not apply to ``ebm``, or None when they do: they are
    method §3's network exactly (an :class:`~diffusion_lib.ired.model.EBM` itself, not a subclass, SiLU,
    two modulated layers, a 128-wide time path, the 16 tensors of :data:`NAMES`). The width may
    vary. Anything else must be differentiated by autograd."""
    if type(ebm) is not EBM:
        return f"the energy network is a {type(ebm).__name__}, not SPEC §3's EBM"
    spec = getattr(ebm, "spec", {})
    if spec.get("activation") != "silu":
        return f"its activation is {spec.get('activation')!r}; the closed form is written for silu"
    if spec.get("layers") != LAYERS:
        return f"it has {spec.get('layers')} modulated layers; the closed form is written for {LAYERS}"
    if ebm.time_dim != TIME_DIM:
        return f"its time embedding is {ebm.time_dim} wide; the closed form is written for {TIME_DIM}"
    names = tuple(name for name, _ in ebm.named_parameters())
    if names != NAMES:
        return f"its parameters are {len(names)} tensors other than the closed form's {len(NAMES)}"
    return None
