"""What a multi-objective search optimises: final figures of each trial (top-1 of its best weights, energy per
image under a named convention, SOPs, MACs, params, firing rate), each maximised or minimised.

The figures are the ones every trial logs when it ends (:mod:`spikingformer.evaluate`), so an objective is a
name, a direction and, for the figures counted under an energy convention, the convention's label. The labels a
trial reports are the ones its model's family declares (its paper's, the common ruler, any further ones), read
from the model itself, so a convention a family adds is searchable without a change here; energy is also
reported under the memory-inclusive estimate (``memory``) every trial measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from spikingformer import evaluate
from spikingformer._validation import ConfigError, Section, require
from spikingformer.config import ModelConfig
from spikingformer.energy.memory import MEMORY
from spikingformer.models import build_model

#: Objective name -> the final figure it reads (per-convention figures get the convention's suffix).
FIGURES = {
    "top1": evaluate.BEST_TOP1,
    "energy_mJ": evaluate.ENERGY_MJ,
    "sops_G": evaluate.SOPS_G,
    "macs_G": evaluate.MACS_G,
    "params": evaluate.PARAMS,
    "firing_rate_mean": evaluate.FIRING_RATE_MEAN,
}
#: Objectives counted under an energy convention (and only those).
PER_CONVENTION = ("energy_mJ", "sops_G", "macs_G")


@dataclass
class Objective(Section):
    """One figure to optimise: ``name`` (see :data:`FIGURES`), ``mode`` (``max``/``min``) and, for energy,
    SOPs and MACs, the ``convention`` it is counted under (a label the model's family declares)."""

    name: Literal["top1", "energy_mJ", "sops_G", "macs_G", "params", "firing_rate_mean"]
    mode: Literal["max", "min"]
    convention: str | None = None

    def validate(self, where: str) -> None:
        if self.name in PER_CONVENTION:
            require(self.convention is not None, where, "convention", self.convention,
                    f"{self.name} is counted under a convention: name one, e.g. 'common' or 'paper'")
        else:
            require(self.convention is None, where, "convention", self.convention,
                    f"only {list(PER_CONVENTION)} are counted under a convention")

    @property
    def figure(self) -> str:
        """The MLflow metric of a finished trial that holds this objective's value."""
        return evaluate.figure(FIGURES[self.name], self.convention or evaluate.PAPER)

    @property
    def label(self) -> str:
        """How tables, figures and the study name it: ``top1``, ``energy_mJ [common]``."""
        return f"{self.name} [{self.convention}]" if self.convention else self.name


def reported_conventions(model: ModelConfig, name: str) -> list[str]:
    """The convention labels under which a trial of ``model`` reports figure ``name``: its family's (built on the
    meta device), and for energy also the memory-inclusive estimate every trial adds."""
    with torch.device("meta"):
        labels = list(build_model(model.name, **model.kwargs).energy_conventions())
    return [*labels, MEMORY] if name == "energy_mJ" else labels


def check_reported(objectives: tuple[Objective, ...], model: ModelConfig, where: str) -> None:
    """Every objective must be a figure the trial reports: its convention one the trial measures it under."""
    for k, objective in enumerate(objectives):
        if objective.convention is None:
            continue
        known = reported_conventions(model, objective.name)
        if objective.convention not in known:
            raise ConfigError(f"{where}.objectives[{k}].convention: {objective.convention!r} is not reported by "
                              f"{model.name} for {objective.name} (allowed: {known})")
