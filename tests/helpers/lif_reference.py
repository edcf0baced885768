"""The fused LIF's two directions written as torch operations, one time step at a time: the reference its
kernels (C++ and Triton) are held to, beside spikingjelly itself.

The forward does spikingjelly's operations in its order and in the input's dtype (its torch path keeps the
state in that dtype), so kernels must match it bit for bit: spikes, the pre-spike membranes H and the last
membrane. The backward computes in fp32 from H with torch's exact sigmoid; the kernels' polynomial exp agrees to a
few 1e-7.
"""

from __future__ import annotations

import torch


def forward(x: torch.Tensor, v0: torch.Tensor, tau: float, v_threshold: float) -> tuple[torch.Tensor, ...]:
    """Spikes, H (both ``x``'s dtype) and the last membrane for ``x`` ``[T, ...]`` from ``v0`` ``[...]``."""
    spikes, h = torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(x)
    v = v0.to(x.dtype)
    for t in range(x.shape[0]):
        h[t] = v + (x[t] - v) / tau
        fired = h[t] >= v_threshold
        spikes[t] = fired
        v = h[t].masked_fill(fired, 0.0)
    return spikes, h, v


def backward(
    grad_spikes: torch.Tensor, grad_v_last: torch.Tensor, h: torch.Tensor, tau: float, v_threshold: float,
    alpha: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dX and dL/dV0 (fp32) from dL/dS, dL/dV_last and H, walking the time axis backwards."""
    grad_x = torch.empty(h.shape, dtype=torch.float32)
    carry = grad_v_last.float()
    for t in range(h.shape[0] - 1, -1, -1):
        ht = h[t].float()
        sg = torch.sigmoid(alpha * (ht - v_threshold))
        gh = grad_spikes[t].float() * ((1.0 - sg) * sg * alpha) + carry * (ht < v_threshold)
        grad_x[t] = gh / tau
        carry = gh - grad_x[t]
    return grad_x, carry
