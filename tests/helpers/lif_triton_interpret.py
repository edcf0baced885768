"""The Triton LIF kernels on CPU under Triton's interpreter, run as the operator's CPU kernels, against
spikingjelly's LIFNode and the torch reference loop (``lif_reference``).

Run as a script (``tests/test_lif_triton.py`` does, in a fresh interpreter): ``TRITON_INTERPRET=1`` must be
set before triton is first imported, and spikingjelly imports it. The operator's CPU kernels are pointed at
``triton_kernels`` (what CUDA tensors run), so every check goes through the operator as a model uses it: input
checks, contiguity, the registered autograd. Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from lif_reference import forward  # noqa: E402  (run as a script beside it)

from spikingformer.neurons import LIF_SETTINGS, compare_lif_backends, op, triton_kernels  # noqa: E402

op._register("cpu", lambda: triton_kernels)


def drive(t: int, dtype: torch.dtype = torch.float32, contiguous: bool = True) -> torch.Tensor:
    """``[T, 3, 700]``: 2100 neurons, three kernel blocks, the last one partial."""
    x = torch.randn(t, 3, 700, generator=torch.Generator().manual_seed(t)) * 1.2 + 0.7
    if not contiguous:
        x = x.view(t, 3, 35, 20).transpose(-1, -2)
    return x.to(dtype)


def check(x: torch.Tensor, tau: float, v_threshold: float) -> str:
    """Through the operator: spikes and input gradients against spikingjelly's; from a non-resting membrane,
    spikes, H and the last membrane bit for bit those of the reference loop."""
    label = f"{x.dtype} T={x.shape[0]} tau={tau} v_th={v_threshold} contiguous={x.is_contiguous()}"
    result = compare_lif_backends(x, tau, v_threshold)
    assert result.spikes_equal, f"spikes differ from spikingjelly's: {label}"
    assert 0.0 < result.firing_rate < 1.0, f"firing rate {result.firing_rate}: {label}"
    tolerance = 1e-6 if x.dtype == torch.float32 else 2 * torch.finfo(x.dtype).eps
    assert result.grad_rel_error <= tolerance, f"gradient error {result.grad_rel_error:.3g} > {tolerance:.3g}: {label}"
    v0 = torch.linspace(0, 0.6, x[0].numel()).view(x.shape[1:]).to(x.dtype)
    outputs = torch.ops.spikingformer.lif_multistep(x, v0, tau, v_threshold, op.SURROGATE_ALPHA)
    expected = forward(x, v0, tau, v_threshold)
    for name, got, want in zip(("spikes", "h", "v_last"), outputs, expected, strict=True):
        assert got.dtype == x.dtype and torch.equal(got, want), f"{name} differs from the reference loop: {label}"
    return f"ok {label}: rate {result.firing_rate:.3f}, grad rel error {result.grad_rel_error:.2e}"


def check_reciprocal_division() -> str:
    """CUDA's bf16 ``x / tau`` is ``x * fp32(1 / tau)`` rounded to bf16: the kernel's reciprocal mode equals it."""
    x, tau, v_threshold = drive(4, torch.bfloat16), 1.5, 0.5
    v, expected = torch.zeros(x.shape[1:], dtype=torch.bfloat16), []
    inv_tau = torch.tensor(1.0, dtype=torch.float32) / tau
    for xt in x:
        h = v + ((xt - v).float() * inv_tau).to(torch.bfloat16)
        expected.append((h >= v_threshold).to(torch.bfloat16))
        v = h.masked_fill(h >= v_threshold, 0.0)
    spikes, _, _ = triton_kernels.forward(x, torch.zeros_like(x[0]), tau, v_threshold, reciprocal=True)
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
