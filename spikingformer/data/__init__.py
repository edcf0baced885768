"""Datasets and loaders for every table: ImageNet, CIFAR10/100, DVS128 Gesture, CIFAR10-DVS, digits, synthetic.

``loaders.build_loaders(config, rank=, world_size=)`` is what the engine calls; ``loaders.build_eval_loader`` /
``loaders.build_eval_dataset`` serve tools that only evaluate (the energy pass). ``pixel_stats`` holds each
dataset's normalisation, which the models' timm configs declare too. Nothing is imported here, so a model
module can read ``pixel_stats`` without pulling in the loaders, which build models.
"""
