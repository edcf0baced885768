"""Model families and their timm registrations."""

from spikingformer.models.base import SpikingTransformer
from spikingformer.models.qkformer import QKFormer
from spikingformer.models.registry import MODEL_CONFIGS, batch_coupling, build_model, model_label
from spikingformer.models.spike_driven import SpikeDrivenTransformer
from spikingformer.models.spikformer import Spikformer
from spikingformer.models.spikingformer import Spikingformer

__all__ = [
    "MODEL_CONFIGS",
    "QKFormer",
    "SpikeDrivenTransformer",
    "Spikformer",
    "Spikingformer",
    "SpikingTransformer",
    "batch_coupling",
    "build_model",
    "model_label",
]
