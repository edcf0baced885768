"""The Triton LIF kernels on CPU under Triton's interpreter, against spikingjelly's LIFNode.

Run as a script (``tests/test_lif_triton.py`` does, in a fresh interpreter): ``TRITON_INTERPRET=1`` must be
set before triton is first imported, and spikingjelly imports it. Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from spikingformer import lif_triton  # noqa: E402
from spikingformer.neurons import LIF_SETTINGS, MultiStepLIF  # noqa: E402


def drive(t: int, dtype: torch.dtype = torch.float32, contiguous: bool = True) -> torch.Tensor:
    """``[T, 3, 700]``: 2100 neurons, three kernel blocks, the last one partial."""
    x = torch.randn(t, 3, 700, generator=torch.Generator().manual_seed(t)) * 1.2 + 0.7
    if not contiguous:
        x = x.view(t, 3, 35, 20).transpose(-1, -2)
    return x.to(dtype)


def check(x: torch.Tensor, tau: float, v_threshold: float, reciprocal: bool | None = None) -> str:
    """Triton forward + backward vs spikingjelly (autograd through its LIFNode) on the same input."""
    lif = MultiStepLIF(tau, v_threshold)
    x_ref = x.detach().clone().requires_grad_()
    ref_spikes = lif(x_ref)
    upstream = torch.linspace(-1, 1, x.numel()).view(x.shape).to(x.dtype)
    (ref_grad,) = torch.autograd.grad(ref_spikes, x_ref, upstream)
    spikes, h, v_last = lif_triton.forward(x, torch.zeros(x.shape[1:]), tau, v_threshold, reciprocal)
    grad, grad_v0 = lif_triton.backward(upstream, torch.zeros(x.shape[1:]), h, tau, v_threshold, 4.0)
    label = f"{x.dtype} T={x.shape[0]} tau={tau} v_th={v_threshold} contiguous={x.is_contiguous()}"
    assert spikes.dtype == x.dtype and h.dtype == x.dtype, label
    assert torch.equal(spikes, ref_spikes.detach().reshape(spikes.shape)), f"spikes differ: {label}"
    assert torch.equal(v_last, lif.v.reshape(v_last.shape)), f"final membrane differs: {label}"
    rate = float(spikes.float().mean())
    assert 0.0 < rate < 1.0, f"firing rate {rate}: {label}"
    error = float((grad.float() - ref_grad.float().reshape(grad.shape)).abs().max() / ref_grad.float().abs().max())
    tolerance = 1e-6 if x.dtype == torch.float32 else 2 * torch.finfo(x.dtype).eps
    assert error <= tolerance, f"input gradient relative error {error:.3g} > {tolerance:.3g}: {label}"
    return f"ok {label}: rate {rate:.3f}, grad rel error {error:.2e}"


def check_reciprocal_division() -> str:
    """CUDA's bf16 ``x / tau`` is ``x * fp32(1 / tau)`` rounded to bf16: the kernel's reciprocal mode equals it."""
    x, tau, v_threshold = drive(4, torch.bfloat16), 1.5, 0.5
    v, expected = torch.zeros(x.shape[1:], dtype=torch.bfloat16), []
    inv_tau = torch.tensor(1.0, dtype=torch.float32) / tau
    for xt in x:
        h = v + ((xt - v).float() * inv_tau).to(torch.bfloat16)
        expected.append((h >= v_threshold).to(torch.bfloat16))
        v = h.masked_fill(h >= v_threshold, 0.0)
    spikes, _, _ = lif_triton.forward(x, torch.zeros(x.shape[1:]), tau, v_threshold, reciprocal=True)
    assert torch.equal(spikes, torch.stack(expected)), "reciprocal-mode bf16 spikes differ from x * fp32(1/tau)"
    return "ok bf16 reciprocal division (the CUDA rounding of torch's x / tau)"


def main() -> int:
    lines = [check(drive(4), tau, v_th) for tau, v_th in LIF_SETTINGS]
    lines += [check(drive(t), tau, v_th) for t in (1, 10, 16) for tau, v_th in (LIF_SETTINGS[0], LIF_SETTINGS[-1])]
    lines += [check(drive(4, contiguous=False), tau, v_th) for tau, v_th in LIF_SETTINGS]
    lines += [check(drive(4, dtype), tau, v_th) for dtype in (torch.bfloat16, torch.float16)
              for tau, v_th in (LIF_SETTINGS[0], LIF_SETTINGS[-1])]
    lines.append(check_reciprocal_division())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
