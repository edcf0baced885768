"""One row as ``sfh reproduce --smoke`` plans it, trained and measured in this process (no Ray): the row's smoke
spec (1 epoch of 1 batch of synthetic data of the row's input shape), ``spikingformer.training.engine.fit`` and the
final figures a trial logs (``spikingformer.evaluate.evaluate_run``), with its spikes alive."""

from __future__ import annotations

import math
from pathlib import Path

from helpers.spikes import firing_rates

from harness.experiment.schema import Experiment
from harness.run.specs import trial_specs
from spikingformer import evaluate
from spikingformer.checkpoints.training import load_checkpoint
from spikingformer.data.loaders import build_eval_loader
from spikingformer.evaluate import evaluate_run
from spikingformer.models import build_model
from spikingformer.training.engine import fit


def train_smoke_row(experiment: Experiment, row: str, tmp_path: Path, *, memory_and_neurobench: bool = True) -> None:
    """Fails unless the row trains a finite step and every figure and convention it reports is measured; the
    memory-inclusive estimate and NeuroBench's metrics (minutes for a 224x224 model here) only when asked."""
    [spec] = trial_specs(experiment, name=f"{experiment.name}-smoke", rows=[row], seeds=1, tracking_uri="-",
                         train_storage=str(tmp_path), smoke=True)
    config = spec.config
    result = fit(config, checkpoint_dir=tmp_path)
    assert math.isfinite(result.history[-1]["train_loss"]) and result.best_checkpoint is not None
    final = evaluate_run(config, result, energy_batches=spec.energy_batches,
                         memory_images=1 if memory_and_neurobench else 0, neurobench=memory_and_neurobench)
    figures = final.metrics
    if memory_and_neurobench:
        assert final.memory is not None and figures[evaluate.figure(evaluate.ENERGY_MJ, evaluate.MEMORY)] > 0
        assert figures["neurobench/parameter_count"] == figures[evaluate.PARAMS]
    # An untrained network barely fires on eval statistics (SDT's not at all): SOPs may be 0 here, the encoder's
    # MACs are not.
    assert figures[evaluate.PARAMS] > 1e6 and figures[evaluate.ENERGY_MJ] > 0 and figures[evaluate.SOPS_G] >= 0
    assert 0 <= figures[evaluate.FIRING_RATE_MEAN] < 1
    for label in final.reports:  # every convention the family declares is measured
        assert figures[evaluate.figure(evaluate.ENERGY_MJ, label)] > 0
    # Its spikes are alive: the trained weights on a batch of the row's data, batch statistics, every LIF layer.
    model = build_model(config.model.name, **config.model.kwargs)
    model.load_state_dict(load_checkpoint(result.last_checkpoint)["model"])
    x, _ = next(iter(build_eval_loader(config)))
    rates = firing_rates(model.train(), x)
    assert rates and sum(r > 0 for r in rates) > len(rates) // 2, rates
