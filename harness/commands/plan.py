"""``sfh plan EXP.yaml``: what reproducing a table will cost, measured on its cluster before anything trains.

The command joins Ray as ``sfh reproduce`` would (``--address``, else a private local Ray) and runs one
short trial per row there (``harness.plan_trial``): the row's model and input pipeline run ``--steps``
training steps at the row's per-worker batch in the recipe's precision (``spikingformer.training.step_cost``), side by
side as the trials would run. ``harness.cost`` projects them over epochs, steps per epoch, seeds and the
experiment's workers, with the measured launch and trial start-up, to wall-clock, device-hours and kWh,
prints the table (or JSON) and logs it to the experiment's MLflow parent run, where ``sfh reproduce`` reads
it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import psutil
import ray

from harness import cluster, cost, plan_trial, sweep, tracking
from harness.commands.reproduce import add_cluster_options, at_least, row_ids
from harness.config import load_experiment, tracked_name
from harness.specs import TrialSpec, bind, plan


def positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def on_device(specs: list[TrialSpec], requested: str) -> list[TrialSpec]:
    """The specs bound to the joined cluster's devices, as ``--device`` asks (auto: as the rows say)."""
    gpus = cluster.gpus_available()
    if requested == "cuda" and not gpus:
        raise ValueError("--device cuda: the Ray cluster has no GPU; use --device cpu or auto")
    forced = {"cpu": False, "cuda": True}.get(requested)
    return [bind(dataclasses.replace(s, resources={**s.resources, "use_gpu": s.resources["use_gpu"] if forced is None
                                                   else forced}), gpus_available=gpus) for s in specs]


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment, skip_invalid=args.skip_invalid)
    name = tracked_name(experiment, smoke=args.smoke, epochs=args.epochs)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    storage = sweep.storage_root(args.storage)
    specs = plan(
        experiment, name=name, rows=args.rows, seeds=args.seeds, tracking_uri=uri, train_storage="",
        smoke=args.smoke, epochs=args.epochs, data_root=args.data_root,
    )
    try:
        print(cluster.connect(args.address, log_to_driver=args.verbose), file=sys.stderr, flush=True)
        specs = on_device(specs, args.device)
        measured, first_trial_at = plan_trial.measure_rows(
            specs, steps=args.steps, name=name, storage=storage, max_concurrent=args.max_concurrent)
        total = ray.cluster_resources()
        capacity = {"CPU": float(total.get("CPU", 0.0)), "GPU": float(total.get("GPU", 0.0))}
    finally:
        cluster.shutdown()
    gpu = any(s.resources["use_gpu"] for s in specs)
    projection = cost.project(
        specs, measured, experiment=name, file=str(args.experiment), device="cuda" if gpu else "cpu",
        steps=args.steps, capacity=capacity, launch_s=first_trial_at - psutil.Process().create_time(),
        max_concurrent=args.max_concurrent, watts=args.watts,
    )
    run_id = cost.log_plan(tracking.Tracking(uri), projection, {
        **tracking.provenance_tags(), "sfh.experiment_file": str(args.experiment),
        tracking.PAPER_TABLE: experiment.paper.table,
    })
    text = projection.to_json() + "\n" if args.format == "json" else cost.render(projection)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text, end="")
    if args.format != "json":
        print(f"\nlogged to MLflow {uri}, experiment {name}, run {run_id}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="measure each row's step here, project the table's cost",
                                   description=__doc__)
    parser.add_argument("experiment", type=Path, help="experiment file, e.g. experiments/imagenet.yaml")
    parser.add_argument("--rows", type=row_ids, help="comma-separated row ids, each once (default: all rows)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="a grid's impossible points are dropped (named on stderr) instead of refusing the file")
    parser.add_argument("--seeds", type=at_least(1), help="seeds per row (default: the file's `seeds`)")
    parser.add_argument("--smoke", action="store_true", help="plan the --smoke run (tracked as <name>-smoke)")
    parser.add_argument("--epochs", type=at_least(1), help="total epochs of every row (tracked as <name>-e<N>)")
    parser.add_argument("--data-root", help="folder with one subfolder per dataset (else synthetic data)")
    parser.add_argument("--steps", type=at_least(1), default=5, metavar="N",
                        help="timed training steps per row, after one warm-up step (default 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="the devices to measure and project on (default auto: the rows' use_gpu, GPUs when "
                             "the cluster has them)")
    parser.add_argument("--watts", type=positive, metavar="W",
                        help="power per device for the energy estimate where the device has no energy counter")
    parser.add_argument("--max-concurrent", type=at_least(1), help="trials at once, as in sfh reproduce")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--out", help="also write the table or JSON to this file")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    add_cluster_options(parser)
    parser.set_defaults(func=run)
