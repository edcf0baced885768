"""Plans: ``sfh plan`` makes one (each row measured on the experiment's cluster, projected over the experiment) and
logs it as a finished parent run of the experiment in MLflow; ``sfh reproduce`` announces the newest before it
launches (and refuses above ``--max-device-hours``); the results table reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import psutil
import ray
from mlflow.exceptions import MlflowException

from harness import tracking
from harness.cost import measuring_trial
from harness.cost.projection import Plan, project, render, schedule
from harness.experiment import load_experiment, tracked_name
from harness.formatting import format_duration, format_kwh
from harness.run import cluster, sweep
from harness.run.specs import TrialSpec, bind, trial_resources, trial_specs

PLAN_ARTIFACT = "plan.json"
PLAN_COMMAND = "plan"


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
          f"{format_duration(plan.launch_s + wall)} wall-clock, {hours:.3g} device-hours, {format_kwh(kwh)} kWh"
          + (f"; rows {', '.join(missing)} are not in it" if missing else ""), flush=True)
    if limit and (missing or hours > max_device_hours):
        why = f"rows {', '.join(missing)} have no plan" if missing else f"the plan projects {hours:.3g} device-hours"
        raise ValueError(f"{limit}: not launched, {why}")


def on_device(specs: list[TrialSpec], requested: str) -> list[TrialSpec]:
    """The specs bound to the joined cluster's devices, as ``--device`` asks (auto: as the rows say)."""
    gpus = cluster.gpus_available()
    if requested == "cuda" and not gpus:
        raise ValueError("--device cuda: the Ray cluster has no GPU; use --device cpu or auto")
    forced = {"cpu": False, "cuda": True}.get(requested)
    return [bind(dataclasses.replace(s, resources={**s.resources, "use_gpu": s.resources["use_gpu"] if forced is None
                                                   else forced}), gpus_available=gpus) for s in specs]


def make_plan(args: argparse.Namespace) -> int:
    """``sfh plan``: measure every row where its trials will run, project the experiment, log and print it."""
    experiment = load_experiment(args.experiment, skip_invalid=args.skip_invalid)
    name = tracked_name(experiment, smoke=args.smoke, epochs=args.epochs)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    storage = sweep.storage_root(args.storage)
    specs = trial_specs(
        experiment, name=name, rows=args.rows, seeds=args.seeds, tracking_uri=uri, train_storage="",
        smoke=args.smoke, epochs=args.epochs, data_root=args.data_root,
    )
    try:
        print(cluster.connect(args.address, log_to_driver=args.verbose), file=sys.stderr, flush=True)
        specs = on_device(specs, args.device)
        measured, first_trial_at = measuring_trial.measure_rows(
            specs, steps=args.steps, name=name, storage=storage, max_concurrent=args.max_concurrent)
        total = ray.cluster_resources()
        capacity = {"CPU": float(total.get("CPU", 0.0)), "GPU": float(total.get("GPU", 0.0))}
    finally:
        cluster.shutdown()
    gpu = any(s.resources["use_gpu"] for s in specs)
    projection = project(
        specs, measured, experiment=name, file=str(args.experiment), device="cuda" if gpu else "cpu",
        steps=args.steps, capacity=capacity, launch_s=first_trial_at - psutil.Process().create_time(),
        max_concurrent=args.max_concurrent, watts=args.watts, price_per_device_hour=args.price_per_device_hour,
    )
    run_id = log_plan(tracking.Tracking(uri), projection, {
        **tracking.provenance_tags(), "sfh.experiment_file": str(args.experiment),
        tracking.PAPER_TABLE: experiment.paper.table,
    })
    text = projection.to_json() + "\n" if args.format == "json" else render(projection)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")
    if args.format != "json":
        print(f"\nlogged to MLflow {uri}, experiment {name}, run {run_id}")
    return 0
