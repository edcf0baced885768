"""Spikes that are alive: a random network barely fires, so tests wake it up and count what fires."""

from __future__ import annotations

import torch
from torch import nn

from spikingformer.neurons import MultiStepLIF


def firing_rates(model: nn.Module, x: torch.Tensor) -> list[float]:
    """The mean spike rate of every LIF layer in one forward of ``x``."""
    rates: list[float] = []
    hooks = [m.register_forward_hook(lambda m, i, out: rates.append(out.float().mean().item()))
             for m in model.modules() if isinstance(m, MultiStepLIF)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return rates


def lively(model: nn.Module, x: torch.Tensor, gain: float = 2.0) -> nn.Module:
    """Random weights barely fire; set BN to the batch statistics of ``x`` with gain 2 (rates ~15 %)."""
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
            nn.init.constant_(bn.weight, gain)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()
