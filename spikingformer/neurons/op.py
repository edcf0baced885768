"""The fused multi-step LIF as one PyTorch operator, ``spikingformer::lif_multistep``, with its analytic backward.

Same neuron as spikingjelly 2.0's ``LIFNode`` as Spikingformer pins it (decaying input, hard reset to 0,
detached reset, sigmoid surrogate), same arithmetic in the same order and dtype, so the spikes are identical:

    H[t] = V[t-1] + (X[t] - V[t-1]) / tau      S[t] = H[t] >= v_th      V[t] = 0 if S[t] else H[t]

Backward needs only ``H`` (kept in the input's dtype, as spikingjelly keeps its state); spikes are recomputed
from it. With ``sg(h) = alpha * sigmoid(alpha (h - v_th)) (1 - sigmoid(...))``, in fp32 whatever the dtype:

    dL/dH[t] = dL/dS[t] sg(H[t]) + dL/dV[t] (1 - S[t])      dL/dX[t] = dL/dH[t] / tau
    dL/dV[t-1] = dL/dH[t] - dL/dH[t] / tau

spikingjelly's autograd graph keeps two tensors per step (the surrogate's input and ``1 - S``); this keeps one.
Both directions are operators (``torch.library.custom_op``) whose kernels are registered per device type in
``KERNELS``, the one place that says what runs where: C++ on CPU (``csrc/lif.cpp``, built at first use by
``build``), Triton on CUDA (``triton_kernels``). A fake implementation gives ``torch.compile`` the output shapes
without running anything, so a compiled model keeps the neuron inside its graph (as an opaque call: Inductor
cannot fuse a hand-written kernel into its own, so ``torch.library.triton_op`` would gain nothing but would run
its body, Triton calls included, on every device). Every kernel reads contiguous tensors of one floating dtype
(fp32, bf16, fp16) with ``v0`` shaped ``x[0]``: checked in ``_checked`` before anything reads memory.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from spikingformer.neurons import build

#: The surrogate gradient's sharpness (spikingjelly ``surrogate.Sigmoid(alpha=4)``).
SURROGATE_ALPHA = 4.0
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton() -> ModuleType:
    from spikingformer.neurons import triton_kernels  # triton is imported only where a CUDA tensor asks for it

    return triton_kernels


#: Device type -> (the kernels in words, a loader of the module whose ``forward``/``backward`` run the op there).
KERNELS: dict[str, tuple[str, Callable[[], ModuleType]]] = {
    "cpu": ("C++ kernels", build.extension),
    "cuda": ("Triton kernels", _triton),
}


def _checked(seq: Tensor, state: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    """``seq`` ``[T, ...]`` and ``state`` ``[...]`` of one floating dtype on one device, made contiguous."""
    if seq.dtype not in DTYPES or state.dtype != seq.dtype:
        raise TypeError(f"lif_multistep: {names[0]} and {names[1]} must share one of {DTYPES}, got {seq.dtype} "
                        f"and {state.dtype}")
    if seq.device != state.device:
        raise ValueError(f"lif_multistep: {names[0]} is on {seq.device} but {names[1]} on {state.device}")
    if seq.dim() < 1 or seq.shape[1:] != state.shape:
        raise ValueError(f"lif_multistep: {names[0]} {list(seq.shape)} must be [T, *{names[1]}.shape] with "
                         f"{names[1]} {list(state.shape)}")
    return seq.contiguous(), state.contiguous()


def _no_kernels(device: torch.device) -> NotImplementedError:
    return NotImplementedError(f"the fused LIF has kernels for {sorted(KERNELS)}, not {device.type}: use "
                               "runtime.lif_backend 'spikingjelly' there")


@torch.library.custom_op("spikingformer::lif_multistep", mutates_args=())
def lif_multistep(x: Tensor, v0: Tensor, tau: float, v_threshold: float, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Spikes ``[T, ...]`` (exactly 0/1), the pre-spike membranes H ``[T, ...]`` (what backward keeps) and the
    last membrane ``[...]``, all contiguous in ``x``'s dtype, from ``x`` ``[T, ...]`` and the initial membrane.

    ``alpha`` (the surrogate's sharpness) is the registered backward's; the forward does not read it.
    """
    raise _no_kernels(x.device)


@torch.library.custom_op("spikingformer::lif_multistep_backward", mutates_args=())
def lif_multistep_backward(
    grad_spikes: Tensor, grad_v_last: Tensor, h: Tensor, tau: float, v_threshold: float, alpha: float
) -> tuple[Tensor, Tensor]:
    """dL/dX ``[T, ...]`` and dL/dV0 ``[...]`` (``h``'s dtype) from dL/dS, dL/dV_last and the saved H."""
    raise _no_kernels(h.device)


def _register(device_type: str, kernels: Callable[[], ModuleType]) -> None:
    @lif_multistep.register_kernel(device_type)
    def forward(x: Tensor, v0: Tensor, tau: float, v_threshold: float, alpha: float):
        return kernels().forward(*_checked(x, v0, ("x", "v0")), tau, v_threshold)

    @lif_multistep_backward.register_kernel(device_type)
    def backward(grad_spikes: Tensor, grad_v_last: Tensor, h: Tensor, tau: float, v_threshold: float, alpha: float):
        grad_spikes, grad_v_last = _checked(grad_spikes, grad_v_last, ("grad_spikes", "grad_v_last"))
        h, _ = _checked(h, grad_v_last, ("h", "grad_v_last"))
        return kernels().backward(grad_spikes, grad_v_last, h, tau, v_threshold, alpha)


for _device_type, (_, _kernels) in KERNELS.items():
    _register(_device_type, _kernels)


@lif_multistep.register_fake
def _(x: Tensor, v0: Tensor, tau: float, v_threshold: float, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    x, v0 = _checked(x, v0, ("x", "v0"))
    return torch.empty_like(x), torch.empty_like(x), torch.empty_like(v0)


@lif_multistep_backward.register_fake
def _(grad_spikes: Tensor, grad_v_last: Tensor, h: Tensor, tau: float, v_threshold: float, alpha: float):
    h, grad_v_last = _checked(h, grad_v_last, ("h", "grad_v_last"))
    _checked(grad_spikes, grad_v_last, ("grad_spikes", "grad_v_last"))
    return torch.empty_like(h), torch.empty_like(grad_v_last)


def _setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor, Tensor]) -> None:
    _, _, tau, v_threshold, alpha = inputs
    _, h, _ = output
    ctx.mark_non_differentiable(h)
    ctx.set_materialize_grads(False)  # no [T, ...] zeros for H's gradient, which is never used
    ctx.save_for_backward(h)
    ctx.params = (tau, v_threshold, alpha)


def _backward(ctx, grad_spikes: Tensor | None, _grad_h: None, grad_v_last: Tensor | None):
    (h,) = ctx.saved_tensors
    if grad_spikes is None:
        grad_spikes = torch.zeros_like(h)
    if grad_v_last is None:  # the usual case: the last membrane feeds nothing
        grad_v_last = h.new_zeros(h.shape[1:])
    grad_x, grad_v0 = lif_multistep_backward(grad_spikes, grad_v_last, h, *ctx.params)
    return grad_x, grad_v0, None, None, None


lif_multistep.register_autograd(_backward, setup_context=_setup_context)
