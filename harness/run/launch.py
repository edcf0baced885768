"""Launching an experiment's trials from the driver: ``sfh reproduce`` (a new sweep, or the rows not yet FINISHED)
and ``sfh resume`` (an interrupted sweep restored from its storage folder), and what both print at the end.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from ray import tune

from harness import tracking
from harness.cost.plans import announce
from harness.experiment import Experiment, load_experiment, tracked_name
from harness.results import format_table
from harness.run import claim, cluster, preemption, sweep
from harness.run.progress import Progress
from harness.run.specs import TrialSpec, check_data_folders, check_tracked, trial_specs
from harness.run.trial import first_line
from spikingformer._validation import load_yaml, require_folder_name


def finish(code: int, results: tune.ResultGrid | None, experiment: Experiment, tracking_uri: str, name: str,
           storage: str) -> int:
    """Print the table, each failed trial and, unless every trial finished, how to go on; returns ``code``."""
    print()
    print(format_table(experiment, tracking_uri, name=name), end="")
    for result in results or []:
        if result.error is not None:
            print(f"trial {result.path} failed: {first_line(result.error)}", file=sys.stderr)
    if code in (sweep.EXIT_INTERRUPTED, preemption.EXIT_STOPPED):
        how = "interrupted" if code == sweep.EXIT_INTERRUPTED else "stopped by SIGTERM"
        print(f"\n{name}: {how}; the unfinished trials are marked KILLED in MLflow and continue from their "
              f"last checkpoints with:\n  {sweep.resume_hint(name, storage)}", file=sys.stderr)
    elif code:
        print(f"\n{name}: not every trial finished (why: under the table above, and on each run in MLflow: its "
              f"sfh.failure tag and failure.txt). Once the cause is fixed, run `sfh reproduce {experiment.source}` "
              "with the same options again: finished rows are skipped, the others train again.", file=sys.stderr)
    return code


@dataclass(frozen=True)
class Reproduction:
    """What ``sfh reproduce`` with these options would train: the experiment, its tracked name, where its state
    and runs go, and one validated spec per (row, seed)."""

    experiment: Experiment
    name: str
    storage: str
    tracking_uri: str
    specs: list[TrialSpec]


def plan_reproduction(args: argparse.Namespace) -> Reproduction:
    """The trial specs of ``sfh reproduce``'s options (every row validated here, before Ray starts); also what a
    Slurm chain checks its allocation and its progress against."""
    experiment = load_experiment(args.experiment, skip_invalid=args.skip_invalid)
    name = tracked_name(experiment, smoke=args.smoke, epochs=args.epochs)
    storage = sweep.storage_root(args.storage)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    specs = trial_specs(
        experiment, name=name, rows=args.rows, seeds=args.seeds, tracking_uri=uri,
        train_storage=sweep.join(storage, name, "train"), smoke=args.smoke, epochs=args.epochs,
        data_root=args.data_root, energy_batches=args.energy_batches, max_failures=args.max_failures,
    )
    return Reproduction(experiment, name, storage, uri, specs)


def reproduce(args: argparse.Namespace) -> int:
    """``sfh reproduce``: plan the trial specs, claim the experiment, train what is not FINISHED, print the table."""
    plan = plan_reproduction(args)
    experiment, name, storage, uri, specs = plan.experiment, plan.name, plan.storage, plan.tracking_uri, plan.specs
    if not (args.smoke or args.skip_data_check):
        check_data_folders(specs)
    with claim.held(storage, name, f"experiment {name}", uri) as store:
        tracked = check_tracked(store, specs, str(args.experiment))
        pending = []
        for spec in specs:
            run = tracked.get(spec.run_key)
            if run is not None and run.info.status == "FINISHED":
                print(f"{spec.run_key}: already FINISHED in MLflow (run {run.info.run_id}), not trained again")
            else:
                pending.append(spec)
        if not pending:
            print(format_table(experiment, uri, name=name), end="")
            return 0
        announce(store, name, pending, args.max_device_hours)  # the plan's projection; refuses above the limit
        store.describe(name, experiment.description)
        with sweep.Drive(store, name) as drive:
            tags = {"sfh.command": "reproduce", "sfh.experiment_file": str(args.experiment),
                    tracking.PAPER_TABLE: experiment.paper.table, "sfh.storage": storage,
                    **tracking.source_tags(str(args.experiment))}
            pending, drive.parent = sweep.start(pending, address=args.address, verbose=args.verbose, store=store,
                                                name=name, tags=tags)
            preemption.clear(name)
            sweep.write_invocation(storage, name, {
                "experiment_file": str(args.experiment), "experiment_yaml": Path(args.experiment).read_text(),
                "name": name, "tracking_uri": uri, "parent_run_id": drive.parent, "skip_invalid": args.skip_invalid,
            })
            print(f"{name}: {len(pending)} trial(s); Tune state in {sweep.join(storage, name)}; MLflow {uri}",
                  flush=True)
            grid = {"trial": tune.grid_search([s.to_mapping() for s in pending])}
            drive.results = sweep.run(
                name=name, storage=storage, param_space=grid, max_concurrent=args.max_concurrent,
                callbacks=[Progress(), preemption.StopOnSigterm(name)],
            )
        code = drive.conclude([s.run_key for s in pending])
        return finish(code, drive.results, experiment, uri, name, storage)


def check_parent(store: tracking.Tracking, record: dict, storage: str, name: str) -> None:
    """The parent run the invocation file names must be in the tracking store, before Ray starts."""
    parent = record["parent_run_id"]
    try:
        store.client.get_run(parent)
    except MlflowException:
        raise ValueError(
            f"{sweep.join(storage, name, sweep.INVOCATION)} names the parent run {parent}, which the tracking store "
            f"{record['tracking_uri']} does not hold (deleted, or tracked in another store): nothing to resume "
            f"into; start again with `sfh reproduce {record['experiment_file']}` (finished rows are skipped)"
        ) from None


def resume(args: argparse.Namespace) -> int:
    """``sfh resume``: restore the sweep from its storage folder under the experiment's claim, print the table."""
    require_folder_name(args.name, "", "name")  # a folder under --storage: never '..' or a path
    storage = sweep.storage_root(args.storage)
    record = sweep.read_invocation(storage, args.name)
    with claim.held(storage, args.name, f"experiment {args.name}", record["tracking_uri"]) as store:
        experiment = Experiment.from_dict(load_yaml(record["experiment_yaml"]), where=record["experiment_file"],
                                          skip_invalid=record.get("skip_invalid", False))
        check_parent(store, record, storage, args.name)
        with sweep.Drive(store, args.name, record["parent_run_id"]) as drive:
            print(cluster.connect(args.address, log_to_driver=args.verbose), flush=True)
            preemption.clear(args.name)
            store.client.update_run(drive.parent, status="RUNNING")
            print(f"{args.name}: resuming from {sweep.join(storage, args.name)}", flush=True)
            drive.results = sweep.restore(name=args.name, storage=storage)
        code = drive.conclude(None)
        return finish(code, drive.results, experiment, record["tracking_uri"], args.name, storage)
