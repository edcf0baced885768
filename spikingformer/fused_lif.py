"""The fused multi-step LIF: the whole time axis in one autograd node, with an analytic backward.

Same neuron as spikingjelly 2.0's ``LIFNode`` as Spikingformer pins it (decaying input, hard reset to 0,
detached reset, sigmoid surrogate), same arithmetic in the same order and dtype, so the spikes are identical:

    H[t] = V[t-1] + (X[t] - V[t-1]) / tau      S[t] = H[t] >= v_th      V[t] = 0 if S[t] else H[t]

Backward needs only ``H`` (kept in the compute dtype, the input's, as spikingjelly keeps its state); spikes
are recomputed from it. With ``sg(h) = alpha * sigmoid(alpha (h - v_th)) (1 - sigmoid(...))``:

    dL/dH[t] = dL/dS[t] sg(H[t]) + dL/dV[t] (1 - S[t])      dL/dX[t] = dL/dH[t] / tau
    dL/dV[t-1] = dL/dH[t] - dL/dH[t] / tau

spikingjelly's autograd graph keeps two tensors per step (the surrogate's input and ``1 - S``); this keeps one.
CUDA tensors run the Triton kernels of ``spikingformer.lif_triton``; fp32 CPU tensors the C kernels of
``spikingformer.lif_cpu``; other CPU tensors (bf16, fp16, or no C compiler) the torch loops below, each step a
handful of in-place vector operations (no autograd graph).
The backward always computes in fp32 and returns the input's dtype.
"""

from __future__ import annotations

import torch

from spikingformer import lif_cpu

#: The surrogate gradient's sharpness (spikingjelly ``surrogate.Sigmoid(alpha=4)``).
SURROGATE_ALPHA = 4.0


def c_kernels_apply(x: torch.Tensor) -> bool:
    """fp32 CPU tensors run ``spikingformer.lif_cpu``'s C kernels when they built; the rest the loops below."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and lif_cpu.kernels() is not None


def _forward_cpu(x: torch.Tensor, v: torch.Tensor, tau: float, v_threshold: float) -> tuple[torch.Tensor, ...]:
    """Spikes, pre-spike membranes H (both ``x``'s dtype) and the final membrane, one time step at a time."""
    spikes = torch.empty_like(x, memory_format=torch.contiguous_format)
    h = torch.empty_like(spikes)
    fired = torch.empty(x.shape[1:], dtype=torch.bool, device=x.device)
    for t in range(x.shape[0]):
        ht = h[t]
        torch.sub(x[t], v, out=ht)  # the same operations, in the same order, as spikingjelly's step
        ht.div_(tau).add_(v)
        torch.ge(ht, v_threshold, out=fired)
        spikes[t].copy_(fired)
        v = ht.masked_fill(fired, 0.0)
    return spikes, h, v


def _backward_cpu(
    grad_spikes: torch.Tensor, grad_v_last: torch.Tensor, h: torch.Tensor, tau: float, v_threshold: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dX and dL/dV[-1] (the initial membrane's), walking the time axis backwards in fp32."""
    grad_x = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    carry = grad_v_last.float().clone()
    for t in range(h.shape[0] - 1, -1, -1):
        ht = h[t].float()
        sg = torch.sigmoid(alpha * (ht - v_threshold))
        gh = grad_spikes[t].float() * ((1.0 - sg) * sg * alpha)
        gh.add_(carry * (ht < v_threshold))
        torch.div(gh, tau, out=grad_x[t])
        carry = gh.sub_(grad_x[t])
    return grad_x, carry


class FusedLIFFunction(torch.autograd.Function):
    """``(x [T, ...], v0 [...]) -> (spikes [T, ...], v_last [...])``, gradients flowing into ``x`` and ``v0``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, v0: torch.Tensor, tau: float, v_threshold: float, alpha: float):
        if x.is_cuda:
            from spikingformer import lif_triton

            spikes, h, v_last = lif_triton.forward(x, v0, tau, v_threshold)
        elif c_kernels_apply(x):
            spikes, h, v_last = lif_cpu.forward(x, v0.to(x.dtype), tau, v_threshold)
        else:
            spikes, h, v_last = _forward_cpu(x, v0.to(x.dtype), tau, v_threshold)
        ctx.save_for_backward(h)
        ctx.params = (tau, v_threshold, alpha, x.dtype)
        ctx.set_materialize_grads(False)
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor | None, grad_v_last: torch.Tensor | None):
        (h,) = ctx.saved_tensors
        tau, v_threshold, alpha, dtype = ctx.params
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(h)
        if grad_v_last is None:
            grad_v_last = torch.zeros(h.shape[1:], dtype=torch.float32, device=h.device)
        if h.is_cuda:
            from spikingformer import lif_triton

            grad_x, grad_v0 = lif_triton.backward(grad_spikes, grad_v_last, h, tau, v_threshold, alpha)
        elif c_kernels_apply(h):
            grad_x, grad_v0 = lif_cpu.backward(grad_spikes, grad_v_last, h, tau, v_threshold, alpha)
        else:
            grad_x, grad_v0 = _backward_cpu(grad_spikes, grad_v_last, h, tau, v_threshold, alpha)
        return grad_x.to(dtype), grad_v0.to(dtype), None, None, None


@torch.compiler.disable  # under runtime.compile the neuron runs its own kernels between compiled regions
def fused_lif(
    x: torch.Tensor,
    v0: torch.Tensor | None,
    tau: float,
    v_threshold: float,
    alpha: float = SURROGATE_ALPHA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes ``[T, ...]`` (``x``'s dtype, exactly 0/1) and the final membrane for a time-first input.

    ``v0`` is the membrane before the first step (None: at rest, 0).
    """
    if v0 is None:
        v0 = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
    return FusedLIFFunction.apply(x, v0, float(tau), float(v_threshold), float(alpha))
