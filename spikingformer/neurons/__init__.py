"""The LIF neuron and its implementations: the module (``lif``), the fused operator (``op``) with its CPU
(``csrc/lif.cpp``, built by ``build``) and CUDA (``triton_kernels``) kernels, and the backend choice
(``backends``: ``runtime.lif_backend``)."""

from spikingformer.neurons.backends import (
    LIF_BACKENDS,
    LIF_SETTINGS,
    LIFComparison,
    compare_lif_backends,
    describe_lif_backend,
    fused_is_exact,
    resolve_lif_backend,
    set_lif_backend,
)
from spikingformer.neurons.lif import TAU_DVS, TAU_STATIC, V_THRESHOLD, V_THRESHOLD_ATTN, MultiStepLIF

__all__ = [
    "LIF_BACKENDS",
    "LIF_SETTINGS",
    "LIFComparison",
    "MultiStepLIF",
    "TAU_DVS",
    "TAU_STATIC",
    "V_THRESHOLD",
    "V_THRESHOLD_ATTN",
    "compare_lif_backends",
    "describe_lif_backend",
    "fused_is_exact",
    "resolve_lif_backend",
    "set_lif_backend",
]
