"""The multi-step LIF neuron every model here is built from, with the upstream Spikingformer semantics.

Upstream used spikingjelly 0.0.0.0.12's ``MultiStepLIFNode(tau, detach_reset=True, backend='cupy')``.
spikingjelly 2.0's ``activation_based.neuron.LIFNode`` in multi-step mode is the same neuron (hard reset
to 0, decaying input, sigmoid surrogate with alpha 4, detached reset); it dispatches to Triton/CUDA or
the torch reference by the tensor's device. ``MultiStepLIF.backend`` switches the same neuron to the fused
operator (``spikingformer.neurons.op``: one autograd node over the whole time axis).
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron, surrogate

from spikingformer.neurons.op import SURROGATE_ALPHA, lif_multistep

#: Membrane time constant for static-image models (ImageNet, CIFAR).
TAU_STATIC = 2.0
#: Membrane time constant for the event-camera (DVS) models.
TAU_DVS = 1.5
#: Firing threshold of every LIF but the attention-output one.
V_THRESHOLD = 1.0
#: Firing threshold of the LIF after the attention matmul.
V_THRESHOLD_ATTN = 0.5


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
        v = self.v  # at rest (the float reset value) or the membrane a previous call left, as spikingjelly reads it
        if isinstance(v, torch.Tensor) and v.shape == x_seq.shape[1:]:
            v0 = v.to(x_seq.dtype)
        else:
            v0 = torch.zeros_like(x_seq[0], memory_format=torch.contiguous_format)
        spikes, _, self.v = lif_multistep(x_seq, v0, self.tau, self.v_threshold, SURROGATE_ALPHA)
        return spikes

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, backend={self.backend}"
