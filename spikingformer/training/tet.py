"""TET loss (Deng et al., ICLR 2022) as SDT trains CIFAR10-DVS with it (upstream ``criterion.py::TET_loss``).

The criterion is applied to each time step's logits and averaged over T, so every step is pushed to classify
on its own; ``lamb`` mixes in the mean squared distance of all logits to ``means`` (upstream: 0.001, 1.0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TETLoss(nn.Module):
    """``(1 - lamb) * mean_t criterion(logits[t], target) + lamb * MSE(logits, means)`` on ``[T, B, classes]``."""

    def __init__(self, criterion: nn.Module, means: float, lamb: float) -> None:
        super().__init__()
        self.criterion = criterion
        self.means = means
        self.lamb = lamb

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 3:
            raise ValueError(
                f"the TET loss takes per-step logits [T, B, classes], got {list(logits.shape)}: "
                "build the model with tet=True (model.kwargs.tet)"
            )
        per_step = torch.stack([self.criterion(step, target) for step in logits]).mean()
        regulariser = F.mse_loss(logits, torch.full_like(logits, self.means))
        return (1 - self.lamb) * per_step + self.lamb * regulariser

    def extra_repr(self) -> str:
        return f"means={self.means}, lamb={self.lamb}"
