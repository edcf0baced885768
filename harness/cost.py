"""What a reproduction will cost, before it starts: each row's measured step, projected over the whole run.

Each row's step is measured inside Ray as its trial will run (:mod:`harness.plan_trial`), with the device's
energy counter running where it has one. ``project`` scales it to the experiment: epochs x steps per epoch
(from the dataset's size and the row's workers) x seeds, plus the evaluations, the measured start-up of a
trial and its final energy pass; trials run side by side as Ray would place them, after the measured
launch (the command's start-up and Ray's), so the wall-clock is the schedule's length and device-hours
the sum over trials. Energy comes from the measured power where the device has a counter, else from the
user's ``--watts`` (labelled estimated), else "n/a" with the reason.

The plan is logged to the experiment's MLflow parent run of ``sfh plan`` (``plan.json`` and totals), where
``sfh reproduce`` and the results table find it again.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mlflow.exceptions import MlflowException

from harness import tracking
from harness.power import ENERGY_J, NA, EnergyMeter, EpochEnergy, meter_for
from harness.results import RowResult, format_number, format_pair
from harness.specs import TrialSpec, trial_resources
from spikingformer._validation import deep_merge
from spikingformer.config import TrainConfig
from spikingformer.training.step_cost import StepCost, measure, run_steps

PLAN_ARTIFACT = "plan.json"
PLAN_COMMAND = "plan"
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
    train: dict[str, Any], steps: int, device: torch.device, budget_mb: float,
    before_timed: Callable[[], object] | None = None,
) -> Measured:
    """The row's step cost on ``device`` in this process (a fresh worker of its own), with the device's energy
    counter read around the timed steps; ``before_timed`` is called once the warm-up is done."""
    import spikingformer  # noqa: F401  (registers the models in this process)

    logging.getLogger("spikingformer").setLevel(logging.ERROR)  # fit's notes on the shortened runs it is given
    config = TrainConfig.from_dict(deep_merge(train, {"runtime": {"device": str(device)}}))
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


@dataclass
class RowPlan:
    """One row's projection: per trial (one seed) and over all its seeds."""

    row: str
    seeds: int
    workers: int
    cost: dict[str, Any]
    epochs: int
    steps_per_epoch: int
    evaluations: int
    eval_batches: int
    #: Training of one trial: epochs x steps x s/step + evaluations (what the epochs' ``epoch_time_s`` add to).
    train_s: float
    #: Before the trial's first epoch: the measured start-up of its workers, then fit's (model, loaders).
    startup_s: float
    #: After its last epoch: the energy pass over the evaluation batches it reads.
    final_s: float
    #: One trial from start to end: start-up, training, final pass.
    trial_s: float
    #: Training device-hours over all seeds (workers x train_s).
    device_hours: float
    watts: float | None
    energy_kWh: float | None
    energy_basis: str


@dataclass
class Plan:
    """The projection of one tracked experiment on the device it was measured on."""

    experiment: str
    file: str
    device: str
    steps: int
    trials_side_by_side: int
    capacity: dict[str, float]
    #: Before the first trial starts: the command's start-up and joining (or starting) Ray, as measured.
    launch_s: float
    #: The whole run: the launch, then every trial as the cluster places them.
    wall_s: float
    device_hours: float
    energy_kWh: float | None
    energy_basis: str
    rows: list[RowPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, row_id: str) -> RowPlan | None:
        return next((r for r in self.rows if r.row == row_id), None)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data["rows"] = [RowPlan(**r) for r in data["rows"]]
        return cls(**data)


def energy_basis(watts: float | None, source: str, watts_flag: float | None) -> tuple[float | None, str]:
    """Per-device power to project with and what it rests on: measured, the user's figure, or n/a and why."""
    if watts is not None:
        return watts, f"measured ({source})"
    if watts_flag is not None:
        return watts_flag, f"estimated from --watts {watts_flag:g} per device"
    return None, f"{source}; give --watts W per device for an estimate"


def schedule(trials: list[tuple[float, dict[str, float]]], capacity: dict[str, float]) -> tuple[float, int]:
    """Wall-clock of trials ``(seconds, resources)`` started in order as soon as the cluster has room for them,
    and the most trials that ran at once."""
    running: list[tuple[float, int]] = []  # (end time, index)
    free = dict(capacity)
    clock, most = 0.0, 0
    for i, (seconds, need) in enumerate(trials):
        while any(need.get(k, 0.0) > free.get(k, 0.0) + 1e-9 for k in need):
            clock, j = heapq.heappop(running)
            for k, v in trials[j][1].items():
                free[k] += v
        for k, v in need.items():
            free[k] -= v
        heapq.heappush(running, (clock + seconds, i))
        most = max(most, len(running))
    return max((end for end, _ in running), default=0.0), most


def project(
    specs: list[TrialSpec],
    measured: dict[str, Measured],
    *,
    experiment: str,
    file: str,
    device: str,
    steps: int,
    capacity: dict[str, float],
    launch_s: float = 0.0,
    max_concurrent: int | None = None,
    watts: float | None = None,
) -> Plan:
    """Scale each row's measured step to all its trials and schedule them on ``capacity`` after ``launch_s``."""
    gpu = device != "cpu"
    notes: list[str] = []
    trials, rows = [], {}
    for spec in specs:
        m = measured[spec.row]
        workers = int(spec.resources["num_workers"])
        need = trial_resources(dataclasses.replace(spec, resources={**spec.resources, "use_gpu": gpu}))
        if spec.row not in rows:
            config = TrainConfig.from_dict(spec.train)
            counts = run_steps(config, workers)
            c = m.cost
            train_s = counts.epochs * counts.steps_per_epoch * c.step_s + counts.evaluations * counts.eval_batches * (
                c.eval_batch_s)
            startup_s = m.startup_s + c.setup_s
            final_s = min(spec.energy_batches, run_steps(config, 1).eval_batches) * c.eval_batch_s
            power, basis = energy_basis(m.watts, m.power_source, watts)
            rows[spec.row] = RowPlan(
                row=spec.row, seeds=0, workers=workers, cost=dataclasses.asdict(c), epochs=counts.epochs,
                steps_per_epoch=counts.steps_per_epoch, evaluations=counts.evaluations,
                eval_batches=counts.eval_batches, train_s=train_s, startup_s=startup_s, final_s=final_s,
                trial_s=startup_s + train_s + final_s, device_hours=0.0, watts=power, energy_kWh=None,
                energy_basis=basis,
            )
        plan = rows[spec.row]
        plan.seeds += 1
        plan.device_hours += plan.train_s * workers / 3600
        if plan.watts is not None:
            plan.energy_kWh = plan.device_hours * plan.watts / 1000
        trials.append((plan.trial_s, need))
    for k in sorted({k for _, need in trials for k in need}):
        largest = max(need.get(k, 0.0) for _, need in trials)
        if largest > capacity.get(k, 0.0) + 1e-9:
            notes.append(f"a trial needs {largest:g} {k}, more than this machine's {capacity.get(k, 0.0):g}: the "
                         f"wall-clock assumes a cluster of one such trial, each worker as fast as measured here")
            capacity = {**capacity, k: largest}
        if max_concurrent is not None:
            capacity = {**capacity, k: min(capacity[k], max_concurrent * largest)}
    wall, side = schedule(trials, capacity)
    energies = [r.energy_kWh for r in rows.values()]
    bases = sorted({r.energy_basis for r in rows.values()})
    return Plan(
        experiment=experiment, file=file, device=next(iter(measured.values())).cost.device, steps=steps,
        trials_side_by_side=side, capacity=capacity, launch_s=launch_s, wall_s=launch_s + wall,
        device_hours=sum(r.device_hours for r in rows.values()),
        energy_kWh=sum(energies) if all(e is not None for e in energies) else None,
        energy_basis="; ".join(bases), rows=list(rows.values()), notes=notes,
    )


# --- rendering --------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """3 s, 4.2 min, 5.1 h, 12.3 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def _kwh(value: float | None) -> str:
    return NA if value is None else f"{value:.3g}"


def render(plan: Plan) -> str:
    """The plan as markdown: one line per row, then the experiment's totals and the notes."""
    lines = [
        f"## plan: {plan.experiment} ({plan.file}) on {plan.device}, {plan.steps} timed step(s) per row",
        "",
        "| row | data | precision | batch/worker | s/step | img/s/worker | peak MB/worker | steps/epoch x epochs "
        "| seeds x workers | start-up + train + final / trial | device-h | kWh |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in plan.rows:
        c = r.cost
        batch = str(c["batch"]) if c["micro_batch"] >= c["batch"] else (
            f"{c['batch']} as {-(-c['batch'] // c['micro_batch'])} x {c['micro_batch']}")
        lines.append(
            f"| {r.row} | {c['data']} | {c['precision']} | {batch} | {c['step_s']:.3g} | {c['img_per_s']:.3g} "
            f"| {c['peak_mem_mb']:,.0f} | {r.steps_per_epoch:,} x {r.epochs} | {r.seeds} x {r.workers} "
            f"| {format_duration(r.startup_s)} + {format_duration(r.train_s)} + {format_duration(r.final_s)} "
            f"| {r.device_hours:.3g} | {_kwh(r.energy_kWh)} |"
        )
    lines += [
        "",
        f"Total: {format_duration(plan.wall_s)} wall-clock ({format_duration(plan.launch_s)} to launch, then "
        f"{plan.trials_side_by_side} trial(s) side by side on "
        f"{', '.join(f'{v:g} {k}' for k, v in plan.capacity.items() if v)}), {plan.device_hours:.3g} device-hours, "
        f"{_kwh(plan.energy_kWh)} kWh (energy: {plan.energy_basis}).",
    ]
    for r in plan.rows:
        if r.cost["note"]:
            lines.append(f"- {r.row}: {r.cost['note']}")
    lines += [f"- {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"


# --- tracking ---------------------------------------------------------------------------------------------


def log_plan(store: tracking.Tracking, plan: Plan, tags: dict[str, str]) -> str:
    """The plan as a finished parent run of the experiment (``sfh.command=plan``): totals, per-row figures,
    ``plan.json``. Returns the run id."""
    run_id = store.start_parent(plan.experiment, {**tags, "sfh.command": PLAN_COMMAND})
    metrics = {"plan.wall_h": plan.wall_s / 3600, "plan.device_hours": plan.device_hours}
    if plan.energy_kWh is not None:
        metrics["plan.energy_kWh"] = plan.energy_kWh
    for r in plan.rows:
        metrics.update({f"plan.{r.row}.train_h": r.train_s / 3600, f"plan.{r.row}.step_s": r.cost["step_s"],
                        f"plan.{r.row}.img_per_s": r.cost["img_per_s"], f"plan.{r.row}.device_hours": r.device_hours})
    store.log_metrics(run_id, metrics)
    store.log_text(run_id, plan.to_json(), PLAN_ARTIFACT)
    store.end(run_id, "FINISHED")
    return run_id


def latest_plan(store: tracking.Tracking, experiment: str) -> Plan | None:
    """The newest plan logged for the tracked ``experiment``, or None."""
    experiment_id = store.find_experiment(experiment)
    if experiment_id is None:
        return None
    runs = store.client.search_runs(
        [experiment_id], filter_string=f"tags.`sfh.command` = '{PLAN_COMMAND}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.client.download_artifacts(runs[0].info.run_id, PLAN_ARTIFACT, tmp)
            return Plan.from_json(Path(path).read_text())
        except (MlflowException, OSError, ValueError, TypeError):
            return None


def announce(store: tracking.Tracking, name: str, specs: list[TrialSpec], max_device_hours: float | None) -> None:
    """Before a launch: print what the latest plan projects for the trials about to start, and refuse (ValueError)
    above ``max_device_hours``, or when that limit is given and no plan covers every row."""
    plan = latest_plan(store, name)
    limit = f"--max-device-hours {max_device_hours:g}" if max_device_hours is not None else ""
    if plan is None:
        if limit:
            raise ValueError(f"{limit}: no plan of {name} in {store.uri}; run `sfh plan` on the experiment first")
        return
    missing = sorted({s.row for s in specs if plan.row(s.row) is None})
    planned = [(plan.row(s.row), s) for s in specs if plan.row(s.row) is not None]
    gpu = plan.capacity.get("GPU", 0.0) > 0 and not plan.device.startswith("cpu")
    trials = [(r.trial_s, trial_resources(dataclasses.replace(s, resources={**s.resources, "use_gpu": gpu})))
              for r, s in planned]
    hours = sum(r.device_hours / r.seeds for r, _ in planned)
    energies = [r.energy_kWh / r.seeds if r.energy_kWh is not None else None for r, _ in planned]
    kwh = sum(energies) if all(e is not None for e in energies) else None
    wall, _ = schedule(trials, {k: max(v, max((n.get(k, 0.0) for _, n in trials), default=0.0))
                                for k, v in plan.capacity.items()})
    print(f"plan ({plan.device}, {plan.steps} timed steps a row): {len(planned)} trial(s) projected at "
          f"{format_duration(plan.launch_s + wall)} wall-clock, {hours:.3g} device-hours, {_kwh(kwh)} kWh"
          + (f"; rows {', '.join(missing)} are not in it" if missing else ""), flush=True)
    if limit and (missing or hours > max_device_hours):
        why = f"rows {', '.join(missing)} have no plan" if missing else f"the plan projects {hours:.3g} device-hours"
        raise ValueError(f"{limit}: not launched, {why}")


# --- what it did cost -------------------------------------------------------------------------------------

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


@dataclass
class RowCost:
    """What a row cost (its finished seeds) beside what the plan projected for them."""

    row: str
    finished: int
    device_hours: float | None
    energy_kWh: float | None
    #: Where the energy came from, or why there is none.
    energy_note: str
    #: The plan's device-hours for the finished seeds (for all planned seeds when none finished).
    planned_device_hours: float | None
    #: Mean over finished seeds of training time / the plan's training time per trial.
    plan_ratio: float | None
    #: Inference energy per image on neuromorphic hardware (45 nm): ours and the paper's, mJ.
    inference_mJ: float | None
    paper_inference_mJ: float | None


def row_costs(store: tracking.Tracking, rows: list[RowResult], plan: Plan | None) -> list[RowCost]:
    """Each row's cost from its finished trial runs, beside ``plan``'s projection of it."""
    costs = []
    for r in rows:
        done = r.finished
        planned = plan.row(r.row_id) if plan is not None else None
        hours = [s.metrics[DEVICE_HOURS] for s in done if DEVICE_HOURS in s.metrics]
        kwh = [s.metrics[ENERGY_KWH] for s in done if ENERGY_KWH in s.metrics]
        unrecorded = f"{NA}: not recorded by this run"
        notes = sorted({store.client.get_run(s.run_id).data.tags.get(ENERGY_SOURCE, unrecorded) for s in done})
        times = [s.metrics[TRAIN_TIME_S] for s in done if TRAIN_TIME_S in s.metrics]
        per_seed = planned.device_hours / planned.seeds if planned is not None else None
        costs.append(RowCost(
            row=r.row_id, finished=len(done), device_hours=sum(hours) if hours and len(hours) == len(done) else None,
            energy_kWh=sum(kwh) if kwh and len(kwh) == len(done) else None, energy_note="; ".join(notes),
            planned_device_hours=None if per_seed is None else per_seed * (len(done) or planned.seeds),
            plan_ratio=statistics.fmean(times) / planned.train_s if times and planned is not None else None,
            inference_mJ=r.energy_mJ, paper_inference_mJ=r.paper.energy_mJ,
        ))
    return costs


def render_costs(costs: list[RowCost], plan: Plan | None) -> str:
    """The cost table (markdown) with the energy notes and the plan it compares with."""
    lines = [
        "| row | seeds done | device-h (ours / plan) | time ours / plan | training kWh "
        "| inference mJ/img (ours / paper) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        lines.append(
            f"| {c.row} | {c.finished} | {format_pair(c.device_hours, c.planned_device_hours)} "
            f"| {NA if c.plan_ratio is None else f'{c.plan_ratio:.2f}'} | {format_number(c.energy_kWh)} "
            f"| {format_pair(c.inference_mJ, c.paper_inference_mJ)} |"
        )
    lines.append("")
    if plan is None:
        lines.append("No plan for this experiment yet: `sfh plan EXP` projects it.")
    else:
        lines.append(f"Plan: {plan.file} on {plan.device}, {format_duration(plan.wall_s)} wall-clock for all its "
                     f"trials, {plan.device_hours:.3g} device-hours, {_kwh(plan.energy_kWh)} kWh.")
    for note in sorted({c.energy_note for c in costs if c.energy_note}):
        lines.append(f"- training energy: {note}")
    return "\n".join(lines) + "\n"
