"""Which LIF implementation a run uses (``runtime.lif_backend``), what that means on a device, and the check that
lets ``auto`` trust the fused operator: its spikes and gradients against spikingjelly's on a probe input.

``fused`` asked for explicitly must run: where its kernels cannot be built or loaded, the run stops with the
reason and the fix. ``auto`` takes ``fused`` where the probe passes and otherwise logs why it fell back to
spikingjelly.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import metadata

import torch
from torch import nn

from spikingformer.neurons.lif import TAU_DVS, TAU_STATIC, V_THRESHOLD, V_THRESHOLD_ATTN, MultiStepLIF
from spikingformer.neurons.op import KERNELS

log = logging.getLogger(__name__)

#: ``runtime.lif_backend`` values: ``auto`` is ``fused`` where ``fused_is_exact`` holds on the device.
LIF_BACKENDS = ("auto", "spikingjelly", "fused")
#: Every (tau, v_threshold) the registered models use.
LIF_SETTINGS = tuple((tau, v_th) for tau in (TAU_STATIC, TAU_DVS) for v_th in (V_THRESHOLD, V_THRESHOLD_ATTN))
#: What spikingjelly 2.0's ``LIFNode`` runs, by device type.
SPIKINGJELLY_KERNELS = {"cuda": "Triton/CUDA"}


def _run(backend: str, x: torch.Tensor, tau: float, v_threshold: float, grad: torch.Tensor):
    lif = MultiStepLIF(tau, v_threshold)
    lif.backend = backend
    x = x.detach().requires_grad_()
    spikes = lif(x)
    return spikes, torch.autograd.grad(spikes, x, grad)[0]


@dataclass(frozen=True)
class LIFComparison:
    """The fused LIF against spikingjelly on one input: the figures the exactness contract is about."""

    spikes_equal: bool
    #: max |dL/dX fused - dL/dX spikingjelly| / max |dL/dX spikingjelly|
    grad_rel_error: float
    firing_rate: float

    def exact(self, grad_tolerance: float = 1e-6) -> bool:
        return self.spikes_equal and self.grad_rel_error <= grad_tolerance


def compare_lif_backends(x: torch.Tensor, tau: float, v_threshold: float) -> LIFComparison:
    """Run both implementations on ``x`` ``[T, ...]`` (any device, dtype, layout) with one fixed upstream gradient."""
    grad = torch.linspace(-1, 1, x.numel(), device=x.device, dtype=torch.float32).view(x.shape).to(x.dtype)
    spikes, dx = _run("fused", x, tau, v_threshold, grad)
    ref_spikes, ref_dx = _run("spikingjelly", x, tau, v_threshold, grad)
    scale = ref_dx.float().abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return LIFComparison(
        spikes_equal=torch.equal(spikes, ref_spikes),
        grad_rel_error=float((dx.float() - ref_dx.float()).abs().max() / scale),
        firing_rate=float(ref_spikes.detach().float().mean()),
    )


def _load_kernels(device_type: str) -> None:
    """Build or load the fused kernels for ``device_type``; raises with the reason where there are none."""
    if device_type not in KERNELS:
        raise ValueError(f"the fused LIF has kernels for {sorted(KERNELS)}, not {device_type}: use "
                         "runtime.lif_backend 'spikingjelly' or 'auto'")
    KERNELS[device_type][1]()


@functools.cache
def _why_not_fused(device: str) -> str | None:
    """None where the fused LIF runs on ``device`` and gives spikingjelly's results on a probe; else the reason."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 257, generator=gen) * 1.5 + 0.8
    try:
        _load_kernels(torch.device(device).type)
        comparisons = [compare_lif_backends(x.to(device), tau, v_th) for tau, v_th in LIF_SETTINGS]
    except Exception as err:  # no compiler, no Triton, no driver: the fused LIF is not available here
        return f"unavailable: {err}"
    if not all(c.exact() for c in comparisons):
        return "not exact there: its spikes or gradients differ from spikingjelly's on the probe"
    return None


def fused_is_exact(device: str) -> bool:
    """The fused LIF runs on ``device`` and gives spikingjelly's spikes and input gradients (1e-6 relative) in fp32.

    A small run of both for every setting in ``LIF_SETTINGS``, once per process; ``auto`` trusts the fused path
    only where this holds.
    """
    return _why_not_fused(device) is None


def resolve_lif_backend(requested: str, device: torch.device | str) -> str:
    """``spikingjelly`` or ``fused``: what ``requested`` (one of ``LIF_BACKENDS``) means on ``device``.

    Raises where ``fused`` is asked for and its kernels cannot run on ``device`` (``build.KernelBuildError`` names
    what failed and the fix); ``auto`` logs why it falls back to spikingjelly.
    """
    if requested not in LIF_BACKENDS:
        raise ValueError(f"lif_backend={requested!r} is not one of {list(LIF_BACKENDS)}")
    device = torch.device(device)
    if requested == "fused":
        _load_kernels(device.type)
    if requested != "auto":
        return requested
    why_not = _why_not_fused(str(device))
    if why_not is None:
        return "fused"
    log.warning("runtime.lif_backend 'auto' on %s: spikingjelly, since the fused LIF is %s", device, why_not)
    return "spikingjelly"


def describe_lif_backend(backend: str, device: torch.device | str) -> str:
    """What runs, in words (the ``sfh.lif`` tag): implementation, kernel kind and device."""
    kind = torch.device(device).type
    if backend == "fused":
        return f"fused multi-step LIF ({KERNELS[kind][0]}, {kind})"
    kernels = SPIKINGJELLY_KERNELS.get(kind, "torch autograd reference")
    return f"spikingjelly {metadata.version('spikingjelly')} LIFNode ({kernels}, {kind})"


def set_lif_backend(model: nn.Module, requested: str, device: torch.device | str) -> str:
    """Point every ``MultiStepLIF`` in ``model`` at ``requested`` resolved for ``device``; returns the resolved one."""
    backend = resolve_lif_backend(requested, device)
    for module in model.modules():
        if isinstance(module, MultiStepLIF):
            module.backend = backend
    return backend
