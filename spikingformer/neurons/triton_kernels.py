"""The fused LIF's CUDA kernels (Triton): what ``spikingformer::lif_multistep`` and its backward run on CUDA.

One program owns ``BLOCK`` neurons and walks the whole time axis in registers: the forward reads X once and
writes the spikes and the pre-spike membrane H; the backward reads dL/dS and H once, recomputes the spikes from
H and writes dL/dX. The op hands them contiguous tensors of one dtype (``[T, N]`` and ``[N]``).

Exactness: fp32 divides with round-to-nearest (``div_rn``) and compiles without FMA contraction, as
spikingjelly's own CUDA kernel does. bf16/fp16 inputs round every intermediate to the input's dtype, as
spikingjelly's torch path (its state lives in the input's dtype) does one operation at a time; torch divides
a reduced-precision CUDA tensor by a Python float as a multiply by the fp32 reciprocal, so ``reciprocal``
follows the device. With ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (the tests do).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _round(value, DTYPE: tl.constexpr):
    """fp32 ``value`` rounded to nearest-even in the storage dtype, widened back (a no-op for fp32).

    bf16 rounds on the bits (torch's rule), so the interpreter, whose bf16 cast truncates, agrees with the GPU.
    """
    if DTYPE == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        return bits.to(tl.float32, bitcast=True)
    elif DTYPE == tl.float16:
        return value.to(tl.float16).to(tl.float32)
    else:
        return value


@triton.jit
def _forward_kernel(
    x_ptr, v0_ptr, spikes_ptr, h_ptr, v_last_ptr, T, N, tau, v_threshold,
    RECIPROCAL: tl.constexpr, BLOCK: tl.constexpr,
):
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    inv_tau = tl.div_rn(tl.full((BLOCK,), 1.0, tl.float32), tau)
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x_ptrs, spikes_ptrs, h_ptrs = x_ptr + offs, spikes_ptr + offs, h_ptr + offs
    for _ in range(T):
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
        d = _round(x - v, dtype)
        if RECIPROCAL:
            q = _round(d * inv_tau, dtype)
        else:
            q = _round(tl.div_rn(d, tau), dtype)
        h = _round(v + q, dtype)
        fired = h >= v_threshold
        tl.store(spikes_ptrs, tl.where(fired, 1.0, 0.0).to(spikes_ptr.dtype.element_ty), mask=mask)
        tl.store(h_ptrs, h.to(dtype), mask=mask)
        v = tl.where(fired, 0.0, h)
        x_ptrs += N
        spikes_ptrs += N
        h_ptrs += N
    tl.store(v_last_ptr + offs, v.to(v_last_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    gs_ptr, gv_last_ptr, h_ptr, gx_ptr, gv0_ptr, T, N, last, tau, v_threshold, alpha, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    carry = tl.load(gv_last_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    gs_ptrs, h_ptrs, gx_ptrs = gs_ptr + last + offs, h_ptr + last + offs, gx_ptr + last + offs
    for _ in range(T):  # t = T-1 .. 0; ``last`` is (T-1) N
        h = tl.load(h_ptrs, mask=mask, other=0.0).to(tl.float32)
        gs = tl.load(gs_ptrs, mask=mask, other=0.0).to(tl.float32)
        sg = 1.0 / (1.0 + tl.exp(-(alpha * (h - v_threshold))))
        gh = gs * ((1.0 - sg) * sg * alpha) + carry * tl.where(h >= v_threshold, 0.0, 1.0)
        gx = tl.div_rn(gh, tau)
        tl.store(gx_ptrs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        carry = gh - gx
        gs_ptrs -= N
        h_ptrs -= N
        gx_ptrs -= N
    tl.store(gv0_ptr + offs, carry.to(gv0_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def forward(
    x: torch.Tensor, v0: torch.Tensor, tau: float, v_threshold: float, reciprocal: bool | None = None
) -> tuple[torch.Tensor, ...]:
    """Spikes and H (``[T, ...]``) and the final membrane, from ``x`` and the initial membrane (one dtype).

    ``reciprocal``: divide by tau as a multiply by its fp32 reciprocal (None: as torch does on ``x``'s device).
    """
    spikes, h, v_last = torch.empty_like(x), torch.empty_like(x), torch.empty_like(v0)
    n = v0.numel()
    if reciprocal is None:
        reciprocal = x.is_cuda and x.dtype != torch.float32
    _forward_kernel[_grid(n)](
        x, v0, spikes, h, v_last, x.shape[0], n, float(tau), float(v_threshold), reciprocal, BLOCK,
        enable_fp_fusion=False,
    )
    return spikes, h, v_last


def backward(
    grad_spikes: torch.Tensor, grad_v_last: torch.Tensor, h: torch.Tensor, tau: float, v_threshold: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dX and dL/dV0 (``h``'s dtype, computed in fp32) from dL/dS, dL/dV_last and the saved H."""
    grad_x, grad_v0 = torch.empty_like(h), torch.empty_like(grad_v_last)
    n = grad_v0.numel()
    _backward_kernel[_grid(n)](
        grad_spikes, grad_v_last, h, grad_x, grad_v0, h.shape[0], n, (h.shape[0] - 1) * n,
        float(tau), float(v_threshold), float(alpha), BLOCK,
        enable_fp_fusion=False,
    )
    return grad_x, grad_v0
