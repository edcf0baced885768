"""Upstream's DVS augmentation (SPEC §6.3): horizontal flip, then SNNAugmentWide, on ``[T, C, H, W]`` frames.

SNNAugmentWide is TrivialAugment restricted to geometric ops that make sense on event counts: one op,
chosen uniformly, with a magnitude drawn uniformly from 31 bins and a random sign. The same transform
applies to every frame of a sample, so the event stream stays coherent in time.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode, RandomErasing
from torchvision.transforms import functional as F

NUM_MAGNITUDE_BINS = 31
#: op -> largest magnitude (radians of shear, pixels of translation, degrees of rotation)
MAX_MAGNITUDE = {"shear_x": 0.3, "translate_x": 5.0, "translate_y": 5.0, "rotate": 30.0}
OPS = ("identity", "shear_x", "translate_x", "translate_y", "rotate", "cutout")


class SNNAugmentWide:
    """Apply one op from :data:`OPS` with nearest interpolation and zero fill (torch's global RNG)."""

    def __init__(self) -> None:
        self.cutout = RandomErasing(p=1.0, scale=(0.001, 0.11), ratio=(1.0, 1.0), value=0)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        op = OPS[int(torch.randint(len(OPS), ()))]
        if op == "identity":
            return frames
        if op == "cutout":
            return self.cutout(frames)
        bins = torch.linspace(0.0, MAX_MAGNITUDE[op], NUM_MAGNITUDE_BINS)
        magnitude = float(bins[torch.randint(NUM_MAGNITUDE_BINS, ())])
        if torch.randint(2, ()):
            magnitude = -magnitude
        angle, translate, shear = 0.0, [0, 0], [0.0, 0.0]
        if op == "shear_x":
            shear = [math.degrees(magnitude), 0.0]
        elif op == "translate_x":
            translate = [int(magnitude), 0]
        elif op == "translate_y":
            translate = [0, int(magnitude)]
        else:
            angle = magnitude
        return F.affine(
            frames, angle=angle, translate=translate, scale=1.0, shear=shear,
            interpolation=InterpolationMode.NEAREST, fill=0.0,
        )


def frames_to_tensor(frames) -> torch.Tensor:
    """spikingjelly's float32 numpy frames (event counts) as a tensor; the whole evaluation transform."""
    return torch.as_tensor(frames, dtype=torch.float32)


class DVSTrainTransform:
    """numpy frames -> float tensor -> flip with probability ``hflip`` -> SNNAugmentWide."""

    def __init__(self, hflip: float) -> None:
        self.hflip = hflip
        self.augment = SNNAugmentWide()

    def __call__(self, frames) -> torch.Tensor:
        x = frames_to_tensor(frames)
        if torch.rand(()) < self.hflip:
            x = x.flip(-1)
        return self.augment(x)
