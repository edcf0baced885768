"""A row's training step measured in this process on its device, with the device's energy counter read around it.

Runs inside the plan's measuring trial (:mod:`harness.cost.measuring_trial`), one fresh Ray Train worker per row.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.cost.power import meter_for
from spikingformer.config import TrainConfig
from spikingformer.training.step_cost import StepCost, measure

#: Share of a node's available memory the CPU measurements running on it at once may plan to fill.
CPU_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Measured:
    """A row's step cost on its trial's device, the power that device drew meanwhile (None: no counter), and
    the trial's start-up before its worker could start (Tune's trial actor, Ray Train's worker group)."""

    cost: StepCost
    watts: float | None
    power_source: str
    startup_s: float = 0.0


def measure_row(
    config: TrainConfig, steps: int, device: torch.device, budget_mb: float,
    before_timed: Callable[[], object] | None = None,
) -> Measured:
    """The row's step cost on ``device`` in this process (a fresh worker of its own), with the device's energy
    counter read around the timed steps; ``before_timed`` is called once the warm-up is done."""
    import spikingformer  # noqa: F401  (registers the models in this process)

    logging.getLogger("spikingformer").setLevel(logging.ERROR)  # fit's notes on the shortened runs it is given
    config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, device=device.type))
    meter = meter_for(device)
    began: list[float] = []

    def start() -> None:
        if before_timed is not None:
            before_timed()
        meter.lap()
        began.append(time.perf_counter())

    cost = measure(config, steps=steps, device=device, memory_budget_mb=budget_mb, before_timed=start)
    joules = meter.lap()
    watts = joules / (time.perf_counter() - began[0]) if joules is not None else None
    return Measured(cost, watts, meter.source)
