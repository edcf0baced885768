"""A trained model's final figures: top-1 under the paper's protocol and the honest ones, SOPs, MACs, energy.

One function, :func:`evaluate_run`, closes every training (a Ray trial and ``python -m spikingformer.train``
alike): it reloads the best weights and measures energy, SOPs and firing rates on evaluation batches under
every energy convention the model's family declares (its paper's, the common ruler, its extras). The names
of the figures are defined here, once; the harness logs them and its tables and the report read them back
by these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikingformer.checkpoints.training import load_checkpoint
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import build_eval_loader, eval_batch_size
from spikingformer.energy import GIGA, EnergyReport, measure_conventions
from spikingformer.energy.memory import MemoryInclusiveReport, measure_memory_inclusive
from spikingformer.energy.neurobench import neurobench_metrics
from spikingformer.models import build_model
from spikingformer.training.engine import FitResult

#: Final figures (one value per run), by what they hold.
BEST_TOP1 = "best_top1"
BEST_EPOCH = "best_epoch"
LAST_TOP1 = "last_top1"
PARAMS = "params"
#: Energy figures, per image, under the family's paper convention (the label "paper" has no suffix). SOPs are the
#: ACs (the papers' "SOPs" column), logged once under that name.
ENERGY_MJ = "energy_mJ"
SOPS_G = "sops_G"
MACS_G = "macs_G"
DENSE_FLOPS_G = "dense_flops_G"
FIRING_RATE_MEAN = "firing_rate_mean"
#: Images the energy pass saw, and its own top-1 on them (a check on the reloaded weights).
ENERGY_IMAGES = "energy_images"
ENERGY_TOP1 = "energy_top1"
#: The energy figures repeated under every other convention, suffixed ``_<label>`` (see :func:`figure`).
PER_CONVENTION = (ENERGY_MJ, SOPS_G, MACS_G)
#: Run artifacts: the paper convention's per-layer report as JSON and as markdown.
ENERGY_ARTIFACT = "energy_layers.json"
ENERGY_TABLE_ARTIFACT = "energy.md"
#: The memory-inclusive estimate against the bit-matched quantized ANN, as JSON and as markdown.
MEMORY_ARTIFACT = "energy_memory.json"
MEMORY_TABLE_ARTIFACT = "energy_memory.md"
#: Memory-inclusive figures (``MemoryInclusiveReport.metrics``): the spiking model, the same silent, its quantized
#: ANN, and the firing rate at which the two cost the same.
ENERGY_MJ_MEMORY = "energy_mJ_memory"
ENERGY_MJ_QANN = "energy_mJ_qann"
BREAK_EVEN_RATE = "break_even_rate"
#: Conventions with an energy figure only (``energy_mJ_<label>``), beside those the family declares.
MEMORY = "memory"
FIRING_RATE_SPIKES = "firing_rate_spikes"
#: Tag prefix of the protocol that selected each top-1 figure.
SELECTION_TAG = "sfh.selection."
PAPER = "paper"
#: The convention every family is also costed under (Spikingformer's rules): the one ruler.
COMMON = "common"


def figure(name: str, convention: str = PAPER) -> str:
    """The name of figure ``name`` under convention label ``convention`` (``energy_mJ_common``, ...)."""
    return name if convention == PAPER else f"{name}_{convention}"


@dataclass
class FinalFigures:
    """What a finished run reports: flat metrics, the energy reports by convention label, selection labels."""

    metrics: dict[str, float]
    reports: dict[str, EnergyReport]
    selection: dict[str, str] = field(default_factory=dict)
    memory: MemoryInclusiveReport | None = None

    @property
    def report(self) -> EnergyReport:
        """The paper convention's report (the per-layer artifact)."""
        return self.reports[PAPER]


def energy_figures(reports: dict[str, EnergyReport]) -> dict[str, float]:
    """Flat metrics of energy reports keyed by convention label (``"paper"`` first)."""
    paper = reports[PAPER]
    metrics = {
        ENERGY_MJ: paper.energy_mj,
        SOPS_G: paper.acs / GIGA,
        MACS_G: paper.macs / GIGA,
        DENSE_FLOPS_G: paper.dense_flops / GIGA,
        PARAMS: float(paper.params),
    }
    if paper.firing_rate_mean is not None:
        metrics[FIRING_RATE_MEAN] = paper.firing_rate_mean
    if paper.images is not None:
        metrics[ENERGY_IMAGES] = float(paper.images)
    if paper.top1 is not None:
        metrics[ENERGY_TOP1] = 100 * paper.top1
    for label, report in reports.items():
        if label != PAPER:
            metrics.update({
                figure(ENERGY_MJ, label): report.energy_mj,
                figure(SOPS_G, label): report.acs / GIGA,
                figure(MACS_G, label): report.macs / GIGA,
            })
    return metrics


def measure_final(model: torch.nn.Module, loader, *, max_batches: int | None) -> dict[str, EnergyReport]:
    """Energy reports of ``model`` under every convention its family declares, by label, in one pass."""
    conventions = model.energy_conventions()
    reports = measure_conventions(model, loader, list(conventions.values()), max_batches=max_batches)
    return dict(zip(conventions, reports, strict=True))


def first_images(loader, count: int) -> list[torch.Tensor]:
    """The first ``count`` inputs of ``loader``, one tensor per image."""
    images: list[torch.Tensor] = []
    for batch in loader:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        images.extend(inputs[: count - len(images)])
        if len(images) >= count:
            break
    return images


def evaluate_run(
    config: TrainConfig, result: FitResult, *, energy_batches: int, device: torch.device | None = None,
    memory_images: int = 2,
) -> FinalFigures:
    """Best/last top-1 of ``result`` and the energy pass (best weights, ``energy_batches`` eval batches, fp32), then
    the memory-inclusive estimate and its quantized ANN on the first ``memory_images`` evaluation images, and
    NeuroBench's metrics (``neurobench/*``) on the first evaluation batch."""
    model = build_model(config.model.name, **config.model.kwargs)
    weights: Path | None = result.best_checkpoint or result.last_checkpoint
    if weights is not None:
        model.load_state_dict(load_checkpoint(weights)["model"])
    model = model.to(device or "cpu")
    loader = build_eval_loader(config)
    reports = measure_final(model, loader, max_batches=energy_batches)
    memory = measure_memory_inclusive(model, [x.to(device or "cpu") for x in first_images(loader, memory_images)])
    batch = eval_batch_size(config)
    field = neurobench_metrics(model, first_images(loader, batch), batch_size=batch)
    metrics = {BEST_TOP1: result.best_top1, BEST_EPOCH: float(result.best_epoch), LAST_TOP1: result.last_top1}
    metrics.update(energy_figures(reports))
    metrics.update(memory.metrics())
    metrics.update(field)
    selection = {k: v for k, v in result.selection.items() if k != "ema_top1" or result.ema_top1 is not None}
    return FinalFigures(metrics, reports, selection, memory)
