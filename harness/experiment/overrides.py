"""What the command line changes in a row before it trains: the tracked name, ``--smoke``, ``--epochs``,
``--data-root``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.experiment.schema import Experiment, Resources
from spikingformer._validation import deep_merge
from spikingformer.config import TrainConfig


def tracked_name(experiment: Experiment, *, smoke: bool = False, epochs: int | None = None) -> str:
    """MLflow experiment and Tune folder name: runs that change the recipe never mix with the paper's protocol."""
    return experiment.name + ("-smoke" if smoke else "") + (f"-e{epochs}" if epochs is not None else "")


#: ``--smoke``: any row becomes a seconds-long CPU run on synthetic data of the row's input shape.
SMOKE_OVERRIDES: dict[str, Any] = {
    "data": {
        "dataset": "synthetic", "root": None, "batch_size": 2, "eval_batch_size": 2, "num_workers": 0,
        "train_size": 2, "eval_size": 2, "max_train_batches": 1, "max_eval_batches": 1, "recipe_global_batch": None,
    },
    "schedule": {"epochs": 1, "warmup_epochs": 0, "cooldown_epochs": 0},
    "runtime": {"device": "cpu", "amp": "none"},
}
#: ``--smoke`` resources: one CPU worker, whatever the table asks for.
SMOKE_RESOURCES = Resources(num_workers=1, use_gpu=False, cpus_per_worker=1.0)


def run_overrides(
    config: TrainConfig, *, smoke: bool = False, epochs: int | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """The command line's changes to a row's TrainConfig, as a mapping to lay over it.

    ``data_root`` holds one folder per dataset (``DIR/cifar10``, ``DIR/dvs128-gesture``, ...); ``epochs``
    sets the total (no cooldown, warmup capped to fit).
    """
    overrides: dict[str, Any] = {}
    if data_root and config.data.dataset not in ("digits", "synthetic"):
        overrides = deep_merge(overrides, {"data": {"root": str(Path(data_root).resolve() / config.data.dataset)}})
    if smoke:
        overrides = deep_merge(overrides, SMOKE_OVERRIDES)
    if epochs is not None:
        warmup = min(config.schedule.warmup_epochs, epochs)
        schedule = {"epochs": epochs, "cooldown_epochs": 0, "warmup_epochs": warmup}
        overrides = deep_merge(overrides, {"schedule": schedule})
    return overrides
