"""What a trial really cost while it trained: its epochs' time and device-hours, the energy its devices' counters
measured, and MLflow's system metrics beside them, logged on the trial's run.
"""

from __future__ import annotations

import torch

from harness import tracking
from harness.cost.power import ENERGY_J, EnergyMeter, EpochEnergy, meter_for
from harness.formatting import NA

#: Final metrics of a trial run: its training time (the sum of its epochs' ``epoch_time_s``, what the plan
#: projects), device-hours (that x workers) and the energy its devices' counters measured.
TRAIN_TIME_S, DEVICE_HOURS, ENERGY_KWH = "train_time_s", "device_hours", "energy_kWh"
#: Tag of a trial run: the energy counter read, or "n/a: <why not>".
ENERGY_SOURCE = "sfh.energy.source"
#: Seconds between two samples of MLflow's system-metrics monitor (``system/...`` metrics of a trial run).
SYSTEM_METRICS_INTERVAL_S = 10


def log_actual(
    store: tracking.Tracking, run_id: str, history: list[dict[str, float]], world_size: int, meter: EnergyMeter
) -> None:
    """A trial's cost from its epochs and their logged ``energy_J`` (kWh only when every epoch has one)."""
    train_s = sum(h["epoch_time_s"] for h in history)
    figures = {TRAIN_TIME_S: train_s, DEVICE_HOURS: train_s * world_size / 3600}
    source = meter.source
    if meter.counter is not None:
        joules = store.client.get_metric_history(run_id, ENERGY_J)
        missing = {int(h["epoch"]) for h in history} - {m.step for m in joules}
        if missing:
            source = f"{NA}: epochs {sorted(missing)} have no energy reading ({meter.source})"
        else:
            figures[ENERGY_KWH] = sum(m.value for m in joules) / 3.6e6
    store.log_metrics(run_id, figures)
    store.set_tags(run_id, {ENERGY_SOURCE: source})


class TrialMeter:
    """What one rank of a trial measures while it trains, from construction to ``stop``: its device's energy,
    lapped every epoch by ``callback`` (summed over ranks, logged by rank 0 as ``energy_J``), and on each node's
    first rank MLflow's own system-metrics monitor (CPU, memory, disk, network; GPU utilisation, memory and
    power where NVML exists) on the trial's run, as ``system/...`` (``system/<node>/...`` over several nodes)."""

    def __init__(self, store: tracking.Tracking | None, run_id: str, tracking_uri: str, device: torch.device, *,
                 local_rank: int, node: str | None) -> None:
        self.meter = meter_for(device, reads_node=local_rank == 0)
        log = (lambda metrics, step: store.log_metrics(run_id, metrics, step=step)) if store is not None else None
        self.callback = EpochEnergy(self.meter, device, log)
        self.monitor = None
        if local_rank == 0:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                                resume_logging=True, node_id=node, tracking_uri=tracking_uri)
            self.monitor.start()

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None
