"""Multi-step LIF neurons with the upstream Spikingformer semantics.

Upstream used spikingjelly 0.0.0.0.12's ``MultiStepLIFNode(tau, detach_reset=True, backend='cupy')``.
spikingjelly 2.0's ``activation_based.neuron.LIFNode`` in multi-step mode is the same neuron (hard reset
to 0, decaying input, sigmoid surrogate with alpha 4, detached reset); it dispatches to Triton/CUDA or
the torch reference by the tensor's device. ``MultiStepLIF.backend`` switches the same neuron to the fused
implementation (``spikingformer.fused_lif``: one autograd node over the whole time axis, Triton on CUDA);
``set_lif_backend`` applies ``runtime.lif_backend`` to a model and says what actually runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch import nn

from spikingformer import lif_cpu
from spikingformer.fused_lif import SURROGATE_ALPHA, fused_lif

#: Membrane time constant for static-image models (ImageNet, CIFAR).
TAU_STATIC = 2.0
#: Membrane time constant for the event-camera (DVS) models.
TAU_DVS = 1.5
#: Firing threshold of every LIF but the attention-output one.
V_THRESHOLD = 1.0
#: Firing threshold of the LIF after the attention matmul.
V_THRESHOLD_ATTN = 0.5
#: ``runtime.lif_backend`` values: ``auto`` is ``fused`` where ``fused_is_exact`` holds on the device.
LIF_BACKENDS = ("auto", "spikingjelly", "fused")


class MultiStepLIF(neuron.LIFNode):
    """LIF over a time-first tensor ``[T, B, ...]`` with Spikingformer's fixed choices.

    Only ``tau`` and ``v_threshold`` vary between layers; everything else is pinned so the
    neuron cannot drift from the reference. Spikes are exactly 0.0 or 1.0. ``backend`` picks the
    implementation: ``"spikingjelly"`` (the reference) or ``"fused"`` (same spikes, less memory, faster).
    """

    backend: str = "spikingjelly"

    def __init__(self, tau: float = TAU_STATIC, v_threshold: float = V_THRESHOLD) -> None:
        super().__init__(
            tau=float(tau),
            decay_input=True,
            v_threshold=float(v_threshold),
            v_reset=0.0,
            surrogate_function=surrogate.Sigmoid(alpha=SURROGATE_ALPHA),
            detach_reset=True,
            step_mode="m",
        )

    def multi_step_forward(self, x_seq: torch.Tensor, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if self.backend == "spikingjelly":
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v = self.v
        v0 = v if isinstance(v, torch.Tensor) and v.shape == x_seq.shape[1:] else None
        spikes, self.v = fused_lif(x_seq, v0, self.tau, self.v_threshold, SURROGATE_ALPHA)
        return spikes

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, backend={self.backend}"


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


#: Every (tau, v_threshold) the registered models use.
LIF_SETTINGS = tuple((tau, v_th) for tau in (TAU_STATIC, TAU_DVS) for v_th in (V_THRESHOLD, V_THRESHOLD_ATTN))


@functools.cache
def fused_is_exact(device: str) -> bool:
    """The fused LIF on ``device`` gives spikingjelly's spikes and input gradients (1e-6 relative) in fp32.

    A small run of both for every setting in ``LIF_SETTINGS``; ``auto`` trusts the fused path only where this holds.
    """
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 3, 257, generator=gen) * 1.5 + 0.8).to(device)
    try:
        return all(compare_lif_backends(x, tau, v_th).exact() for tau, v_th in LIF_SETTINGS)
    except Exception:  # any failure (no Triton, no driver) means "not exact here"
        return False


def resolve_lif_backend(requested: str, device: torch.device | str) -> str:
    """``spikingjelly`` or ``fused``: what ``requested`` (one of ``LIF_BACKENDS``) means on ``device``."""
    if requested not in LIF_BACKENDS:
        raise ValueError(f"lif_backend={requested!r} is not one of {list(LIF_BACKENDS)}")
    if requested != "auto":
        return requested
    return "fused" if fused_is_exact(torch.device(device).type) else "spikingjelly"


def describe_lif_backend(backend: str, device: torch.device | str) -> str:
    """What runs, in words (the ``sfh.lif`` tag): implementation, kernel kind and device."""
    kind = torch.device(device).type
    if backend == "fused":
        kernels = "Triton kernels" if kind == "cuda" else "C kernels" if lif_cpu.kernels() else "torch vector loop"
        return f"fused multi-step LIF ({kernels}, {kind})"
    kernels = "Triton/CUDA" if kind == "cuda" else "torch autograd reference"
    return f"spikingjelly {metadata.version('spikingjelly')} LIFNode ({kernels}, {kind})"


def set_lif_backend(model: nn.Module, requested: str, device: torch.device | str) -> str:
    """Point every ``MultiStepLIF`` in ``model`` at ``requested`` resolved for ``device``; returns the resolved one."""
    backend = resolve_lif_backend(requested, device)
    for module in model.modules():
        if isinstance(module, MultiStepLIF):
            module.backend = backend
    return backend
