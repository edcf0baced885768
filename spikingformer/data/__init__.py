"""Datasets and loaders for every table: ImageNet, CIFAR10/100, DVS128 Gesture, CIFAR10-DVS, digits, synthetic.

``build_loaders(config, rank=, world_size=)`` is what the engine calls; ``build_eval_loader`` /
``build_eval_dataset`` serve tools that only evaluate (the energy pass).
"""

from spikingformer.data.loaders import (
    EVENT_DATASETS,
    InputSpec,
    LabelledSplit,
    build_dataset,
    build_eval_dataset,
    build_eval_loader,
    build_loaders,
    check_data,
    input_spec,
)
from spikingformer.data.synthetic import SyntheticDataset

__all__ = [
    "EVENT_DATASETS",
    "InputSpec",
    "LabelledSplit",
    "SyntheticDataset",
    "build_dataset",
    "build_eval_dataset",
    "build_eval_loader",
    "build_loaders",
    "check_data",
    "input_spec",
]
