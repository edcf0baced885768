"""The plan's measuring trial: a row's training step timed inside Ray, where and as its trial will run.

``sfh plan`` runs one of these per row through Ray Tune on the experiment's cluster, with the resources of
one worker of the row's trial, as many side by side as ``sfh reproduce`` would run its trials. The timed
steps therefore share the node with the same neighbours (the other trials, Ray's own processes), run on
the cluster's devices rather than the machine the command was typed on, and the trial's start-up (Tune's
trial actor, Ray Train's worker group, the imports of a fresh worker) is measured instead of assumed. The
measurements that run at once start their timed steps together (:class:`TimedStart`), so that each is
timed beside the others' steps, as in the trials' epochs, not beside their start-up.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import psutil
import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer, get_device
from ray.tune.integration.ray_train import TuneReportCallback

from harness.cost.measure import CPU_MEMORY_SHARE, Measured, measure_row
from harness.cost.projection import schedule
from harness.formatting import format_duration
from harness.run import sweep
from harness.run.specs import TRIAL_DRIVER_CPU, TrialSpec, path_name, trial_resources
from harness.run.trial import first_line
from spikingformer.config import TrainConfig
from spikingformer.training.step_cost import StepCost

#: The longest a measurement waits for the others of its group before timing its steps alone.
TIMED_START_WAIT_S = 600.0

#: The result keys of a measuring trial: its seconds per step (the sweep's metric), its Measured as JSON and
#: when the trial started (wall clock).
STEP_S, MEASURED, BEGAN = "step_s", "sfh_measured", "sfh_began"


@dataclass(frozen=True)
class MeasureJob:
    """What the measuring worker needs: the row's training config and how much of the node it may plan for."""

    config: TrainConfig
    steps: int
    use_gpu: bool
    #: Share of the node's available memory this measurement may plan to fill (CPU; the trials side by side
    #: share the node's memory).
    memory_share: float
    #: When the trial started (wall clock, seconds): the worker's start-up is measured from it.
    began: float
    #: The named :class:`TimedStart` actor of the plan and its namespace.
    timed_start: tuple[str, str]


def group_end(arrival: int, rows: int, side: int) -> int:
    """How many arrivals the ``arrival``-th (from 0) of ``rows`` measurements, run ``side`` at a time, waits for:
    the last of its group."""
    return min((arrival // side + 1) * side, rows)


@ray.remote(num_cpus=0)
class TimedStart:
    """A barrier per group of measurements that run at once, in the order they arrive. ``arrive`` returns how
    many arrivals the caller waits for before timing."""

    def __init__(self, rows: int, side: int) -> None:
        self.rows, self.side, self.arrived = rows, side, 0

    def arrive(self) -> int:
        self.arrived += 1
        return group_end(self.arrived - 1, self.rows, self.side)

    def count(self) -> int:
        return self.arrived


def wait_for_group(name: str, namespace: str) -> None:
    """Arrive at the plan's TimedStart and wait (at most TIMED_START_WAIT_S) until the group is complete."""
    barrier = ray.get_actor(name, namespace=namespace)
    target = ray.get(barrier.arrive.remote())
    deadline = time.monotonic() + TIMED_START_WAIT_S
    while ray.get(barrier.count.remote()) < target and time.monotonic() < deadline:
        time.sleep(0.1)


def trainable() -> Any:
    """The Tune trainable of the plan's trials."""
    return tune.with_resources(measure_trial, {"cpu": TRIAL_DRIVER_CPU})


def measure_trial(config: dict[str, Any]) -> None:
    """Tune function: one Ray Train worker with the row's per-worker resources, timing the row's step."""
    began = time.time()
    spec = TrialSpec.from_mapping(config["trial"])
    res = spec.resources
    job = MeasureJob(spec.config, int(config["steps"]), bool(res["use_gpu"]), float(config["memory_share"]), began,
                     tuple(config["timed_start"]))
    TorchTrainer(
        functools.partial(measure_worker, job),
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=job.use_gpu, resources_per_worker={"CPU": float(res["cpus_per_worker"])}
        ),
        run_config=ray.train.RunConfig(
            name=f"plan-{path_name(spec.row)}-{int(began)}", storage_path=config["storage"],
            callbacks=[TuneReportCallback()], failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    ).fit()


def measure_worker(job: MeasureJob) -> None:
    """Ray Train loop of the measuring worker: the row's step cost on this worker's device, reported once."""
    ready = time.time()
    device = get_device() if job.use_gpu else torch.device("cpu")
    budget = job.memory_share * psutil.virtual_memory().available / 2**20
    measured = measure_row(job.config, job.steps, device, budget, lambda: wait_for_group(*job.timed_start))
    measured = dataclasses.replace(measured, startup_s=ready - job.began)
    ray.train.report({STEP_S: measured.cost.step_s, MEASURED: json.dumps(dataclasses.asdict(measured)),
                      BEGAN: job.began})


def read_measured(result: dict[str, Any]) -> Measured:
    """A measuring trial's Measured back from its last Tune result."""
    data = json.loads(result[MEASURED])
    return Measured(**{**data, "cost": StepCost(**data["cost"])})


class MeasureProgress(tune.Callback):
    """One line when a row's measurement starts and one with its figures when it ends (on stderr: stdout
    carries the plan itself, which may be JSON)."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"{trial.config['trial']['row']:<22} measuring ({trial.config['steps']} timed steps)", file=sys.stderr,
              flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        m = read_measured(trial.last_result)
        print(f"{trial.config['trial']['row']:<22} {m.cost.step_s:.3g} s/step, {m.cost.img_per_s:.3g} img/s, "
              f"start-up {format_duration(m.startup_s)}", file=sys.stderr, flush=True)


def measuring_spec(spec: TrialSpec, node_cpus: float) -> TrialSpec:
    """The row's trial as one measuring worker: its per-worker resources, its CPUs capped to the whole CPUs
    the largest node has beside the trial's driver."""
    cpus = min(float(spec.resources["cpus_per_worker"]), max(1.0, math.floor(node_cpus - TRIAL_DRIVER_CPU)))
    return dataclasses.replace(spec, resources={**spec.resources, "num_workers": 1, "cpus_per_worker": cpus})


def measure_rows(
    specs: list[TrialSpec], *, steps: int, name: str, storage: str, max_concurrent: int | None
) -> tuple[dict[str, Measured], float]:
    """Each row's (first seed's) step measured by a trial on the joined Ray cluster, side by side as their
    resources allow (and no more: a trial started while its worker waits for room would count the wait as its
    start-up). Returns the measurements and when the first measuring trial started (wall clock)."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    node_cpus = max(n.get("CPU", 0.0) for n in nodes)
    first = {}
    for spec in specs:
        first.setdefault(spec.row, measuring_spec(spec, node_cpus))
    _, side = schedule([(1.0, trial_resources(s)) for s in first.values()], dict(ray.cluster_resources()))
    side = min(side, max_concurrent or side)
    barrier = f"sfh-plan-timed-start-{name}"
    namespace = ray.get_runtime_context().namespace
    holder = TimedStart.options(name=barrier, namespace=namespace).remote(len(first), side)
    try:
        results = sweep.run(
            name=f"{name}-plan", storage=storage, trainable=trainable(), metric=STEP_S, mode="min",
            param_space={"trial": tune.grid_search([s.to_mapping() for s in first.values()]), "steps": steps,
                         "memory_share": CPU_MEMORY_SHARE / side, "timed_start": [barrier, namespace],
                         "storage": sweep.join(storage, f"{name}-plan", "train")},
            max_concurrent=side, max_failures=0, callbacks=[MeasureProgress()],
        )
    finally:
        ray.kill(holder)
    found, began = {}, []
    for result in results:
        row = result.config["trial"]["row"]
        if result.error is not None or MEASURED not in (result.metrics or {}):
            why = first_line(result.error) if result.error is not None else "interrupted"
            raise RuntimeError(f"{name}: the measurement of row {row} did not finish ({why}); log in {result.path}"
                               ) from result.error  # the cause (e.g. Ray's out-of-memory kill) for the CLI's line
        found[row] = read_measured(result.metrics)
        began.append(float(result.metrics[BEGAN]))
    return found, min(began)
