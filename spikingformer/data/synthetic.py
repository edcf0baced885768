"""Synthetic samples of any model's input shape: tests and smoke runs of every table without data files.

Each class has a fixed random prototype; a sample is its prototype plus unit Gaussian noise, so a model
can learn the task. Samples are generated on demand from per-index seeds (no memory, fully deterministic).
Event-shaped samples are clamped at zero, like event counts.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

#: Seed offsets of evaluation samples and of class prototypes: torch's CPU generator keeps 32 bits of a seed,
#: so they stay below 2**32 and sets stay below 2**30 samples.
EVAL_OFFSET = 1 << 30
PROTOTYPE_SEED = 1 << 31


class SyntheticDataset(Dataset):
    """``size`` samples ``(tensor of input_shape, label)`` with labels cycling through ``num_classes``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, size: int, *, train: bool, events: bool) -> None:
        self.input_shape = tuple(input_shape)
        self.size = size
        if size > EVAL_OFFSET:
            raise ValueError(f"synthetic sets hold at most {EVAL_OFFSET} samples, asked for {size}")
        self.offset = 0 if train else EVAL_OFFSET
        self.events = events
        self.targets = [i % num_classes for i in range(size)]

    def __len__(self) -> int:
        return self.size

    def _randn(self, seed: int) -> torch.Tensor:
        return torch.randn(self.input_shape, generator=torch.Generator().manual_seed(seed))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = self.targets[index]
        x = self._randn(PROTOTYPE_SEED + label) + self._randn(self.offset + index)
        return (x.clamp_(min=0.0) if self.events else x), label
