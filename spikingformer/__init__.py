"""Spikingformer: the spike-driven residual transformer SNN, its Spikformer baseline and their tooling.

Importing the package registers every paper configuration with timm.
"""

from spikingformer.checkpoints.upstream import load_upstream_state_dict
from spikingformer.models import MODEL_CONFIGS, Spikformer, Spikingformer, SpikingTransformer, build_model

__all__ = [
    "MODEL_CONFIGS",
    "Spikformer",
    "Spikingformer",
    "SpikingTransformer",
    "build_model",
    "load_upstream_state_dict",
]
