"""The golden fixtures of ``tests/golden/`` (outputs of the upstream code, see its manifest) as test objects."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spikingformer import build_model, load_upstream_state_dict
from spikingformer.config import AugmentConfig
from spikingformer.training.epoch import build_criterion

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
CASES = MANIFEST["cases"]


@dataclass
class Golden:
    """One case: its manifest entry and its tensors."""

    name: str
    entry: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def under(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors stored under ``prefix/`` (``state``, ``grad``), by upstream key."""
        return {k.removeprefix(f"{prefix}/"): v for k, v in self.tensors.items() if k.startswith(f"{prefix}/")}

    @property
    def input(self) -> torch.Tensor:
        return self.tensors["input"].float()  # event counts are stored as uint8

    def model(self, **overrides: Any) -> nn.Module:
        """The registered model of the case, loaded from the upstream state dict by the upstream import."""
        model = build_model(self.entry["model"], **{**self.entry["kwargs"], **overrides})
        load_upstream_state_dict(model, self.under("state"))
        return model

    def criterion(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The case's loss as the project computes it (the TET loss through the training criterion)."""
        loss = self.entry["loss"]
        if loss["kind"] == "cross_entropy":
            return F.cross_entropy
        augment = AugmentConfig(smoothing=loss["smoothing"], tet_lamb=loss["lamb"], tet_means=loss["means"])
        return build_criterion(augment, num_classes=int(self.tensors["logits_eval"].shape[-1]))[0]


def load(name: str) -> Golden:
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as arrays:
        tensors = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    return Golden(name, CASES[name], tensors)
