"""What a reproduction will cost, before it starts: each row's measured step, projected over the whole run.

Each row's step is measured inside Ray as its trial will run (:mod:`harness.cost.measuring_trial`), with the device's
energy counter running where it has one. ``project`` scales it to the experiment: epochs x steps per epoch
(from the dataset's size and the row's workers) x seeds, plus the evaluations, the measured start-up of a
trial and its final energy pass; trials run side by side as Ray would place them, after the measured
launch (the command's start-up and Ray's), so the wall-clock is the schedule's length and device-hours
the sum over trials. Energy comes from the measured power where the device has a counter, else from the
user's ``--watts`` (labelled estimated), else "n/a" with the reason.

The plan is logged to MLflow by :mod:`harness.cost.plans`, where ``sfh reproduce`` and the results table find it.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from harness.cost.measure import Measured
from harness.formatting import format_duration, format_kwh, format_money
from harness.run.specs import TrialSpec, trial_resources
from spikingformer.training.step_cost import run_steps


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
    #: What one device-hour costs (``--price-per-device-hour``, in the user's currency), None when not given.
    price_per_device_hour: float | None = None

    def cost(self, device_hours: float) -> float | None:
        """The price of ``device_hours``, None without a price."""
        return None if self.price_per_device_hour is None else device_hours * self.price_per_device_hour

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
    price_per_device_hour: float | None = None,
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
            config = spec.config
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
        price_per_device_hour=price_per_device_hour,
    )


def render(plan: Plan) -> str:
    """The plan as markdown: one line per row, then the experiment's totals and the notes; with a price per
    device-hour, what each row and the whole table cost."""
    priced = plan.price_per_device_hour is not None
    lines = [
        f"## plan: {plan.experiment} ({plan.file}) on {plan.device}, {plan.steps} timed step(s) per row",
        "",
        "| row | data | precision | batch/worker | s/step | img/s/worker | peak MB/worker | steps/epoch x epochs "
        "| seeds x workers | start-up + train + final / trial | device-h | kWh |" + (" cost |" if priced else ""),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if priced else ""),
    ]
    for r in plan.rows:
        c = r.cost
        batch = str(c["batch"]) if c["micro_batch"] >= c["batch"] else (
            f"{c['batch']} as {-(-c['batch'] // c['micro_batch'])} x {c['micro_batch']}")
        lines.append(
            f"| {r.row} | {c['data']} | {c['precision']} | {batch} | {c['step_s']:.3g} | {c['img_per_s']:.3g} "
            f"| {c['peak_mem_mb']:,.0f} | {r.steps_per_epoch:,} x {r.epochs} | {r.seeds} x {r.workers} "
            f"| {format_duration(r.startup_s)} + {format_duration(r.train_s)} + {format_duration(r.final_s)} "
            f"| {r.device_hours:.3g} | {format_kwh(r.energy_kWh)} |"
            + (f" {format_money(plan.cost(r.device_hours))} |" if priced else "")
        )
    lines += [
        "",
        f"Total: {format_duration(plan.wall_s)} wall-clock ({format_duration(plan.launch_s)} to launch, then "
        f"{plan.trials_side_by_side} trial(s) side by side on "
        f"{', '.join(f'{v:g} {k}' for k, v in plan.capacity.items() if v)}), {plan.device_hours:.3g} device-hours, "
        f"{format_kwh(plan.energy_kWh)} kWh (energy: {plan.energy_basis})"
        + (f", {format_money(plan.cost(plan.device_hours))} at {plan.price_per_device_hour:g} per device-hour."
           if priced else "."),
    ]
    for r in plan.rows:
        if r.cost["note"]:
            lines.append(f"- {r.row}: {r.cost['note']}")
    lines += [f"- {note}" for note in plan.notes]
    return "\n".join(lines) + "\n"
