"""Upstream's DVS augmentation (its DVS ``train.py``): horizontal flip, then SNNAugmentWide, on ``[T, C, H, W]`` frames.

SNNAugmentWide is TrivialAugment restricted to geometric ops that make sense on event counts: one op, chosen
uniformly, a magnitude drawn uniformly from 31 bins spanning [-max, max], then a random sign, drawn in
upstream's order (Spikformer's ``cifar10dvs/autoaugment.py``, which Spikingformer imports). The same
transform applies to every frame of a sample, so the event stream stays coherent in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import InterpolationMode, RandomErasing
from torchvision.transforms import functional as F

NUM_MAGNITUDE_BINS = 31
#: op -> (magnitude bins, signed): radians of shear, pixels of translation, degrees of rotation. Identity draws
#: no magnitude; cutout draws one it never uses (RandomErasing sizes the patch), as upstream.
SPACE: dict[str, tuple[torch.Tensor, bool]] = {
    "identity": (torch.tensor(0.0), False),
    "shear_x": (torch.linspace(-0.3, 0.3, NUM_MAGNITUDE_BINS), True),
    "translate_x": (torch.linspace(-5.0, 5.0, NUM_MAGNITUDE_BINS), True),
    "translate_y": (torch.linspace(-5.0, 5.0, NUM_MAGNITUDE_BINS), True),
    "rotate": (torch.linspace(-30.0, 30.0, NUM_MAGNITUDE_BINS), True),
    "cutout": (torch.linspace(1.0, 30.0, NUM_MAGNITUDE_BINS), True),
}
OPS = tuple(SPACE)


class SNNAugmentWide:
    """Apply one op from :data:`OPS` with nearest interpolation and zero fill (torch's global RNG)."""

    def __init__(self) -> None:
        self.cutout = RandomErasing(p=1.0, scale=(0.001, 0.11), ratio=(1.0, 1.0), value=0)

    @staticmethod
    def sample() -> tuple[str, float]:
        """Draw (op, signed magnitude) with upstream's sequence of draws."""
        op = OPS[int(torch.randint(len(OPS), (1,)))]
        bins, signed = SPACE[op]
        magnitude = float(bins[torch.randint(len(bins), (1,))]) if bins.ndim else 0.0
        if signed and torch.randint(2, (1,)):
            magnitude = -magnitude
        return op, magnitude

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        op, magnitude = self.sample()
        if op == "identity":
            return frames
        if op == "cutout":
            return self.cutout(frames)
        if op == "rotate":
            return F.rotate(frames, magnitude, interpolation=InterpolationMode.NEAREST, fill=0.0)
        shift = int(magnitude)
        geometry = {
            "shear_x": {"translate": [0, 0], "shear": [math.degrees(magnitude), 0.0]},
            "translate_x": {"translate": [shift, 0], "shear": [0.0, 0.0]},
            "translate_y": {"translate": [0, shift], "shear": [0.0, 0.0]},
        }[op]
        return F.affine(frames, angle=0.0, scale=1.0, interpolation=InterpolationMode.NEAREST, fill=0.0, **geometry)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """spikingjelly's float32 numpy frames (event counts) as a tensor; the whole evaluation transform."""
    return torch.as_tensor(frames, dtype=torch.float32)


class DVSTrainTransform:
    """numpy frames -> float tensor -> flip with probability ``hflip`` -> SNNAugmentWide."""

    def __init__(self, hflip: float) -> None:
        self.hflip = hflip
        self.augment = SNNAugmentWide()

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = frames_to_tensor(frames)
        if torch.rand(()) < self.hflip:
            x = x.flip(-1)
        return self.augment(x)


class ResizedFrames:
    """Frames resized to ``size`` x ``size`` before ``transform``: SDT's CIFAR10-DVS ``Resize(64)``.

    Upstream resizes each time step with torchvision's bilinear ``Resize`` on a tensor, which did not
    antialias before torchvision 0.17: at 128 -> 64 that is the mean of each 2x2 block.
    """

    def __init__(self, size: int, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.size = size
        self.transform = transform

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.nn.functional.interpolate(
            frames_to_tensor(frames), size=(self.size, self.size), mode="bilinear", align_corners=False,
            antialias=False,
        )
        return self.transform(x)
