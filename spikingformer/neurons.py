"""Multi-step LIF neurons with the upstream Spikingformer semantics.

Upstream used spikingjelly 0.0.0.0.12's ``MultiStepLIFNode(tau, detach_reset=True, backend='cupy')``.
spikingjelly 2.0's ``activation_based.neuron.LIFNode`` in multi-step mode is the same neuron (hard reset
to 0, decaying input, sigmoid surrogate with alpha 4, detached reset); it dispatches to Triton/CUDA or
the torch reference by the tensor's device, so there is no backend switch to get wrong.
"""

from __future__ import annotations

from spikingjelly.activation_based import neuron, surrogate

#: Membrane time constant for static-image models (ImageNet, CIFAR).
TAU_STATIC = 2.0
#: Membrane time constant for the event-camera (DVS) models.
TAU_DVS = 1.5
#: Firing threshold of every LIF but the attention-output one.
V_THRESHOLD = 1.0
#: Firing threshold of the LIF after the attention matmul.
V_THRESHOLD_ATTN = 0.5
SURROGATE_ALPHA = 4.0


class MultiStepLIF(neuron.LIFNode):
    """LIF over a time-first tensor ``[T, B, ...]`` with Spikingformer's fixed choices.

    Only ``tau`` and ``v_threshold`` vary between layers; everything else is pinned so the
    neuron cannot drift from the reference. Spikes are exactly 0.0 or 1.0.
    """

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

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}"
