"""``sfh resume NAME``: continue an experiment whose driver died, from its Tune state in the storage folder.

Finished trials are not run again; interrupted ones continue from their last checkpoint (Ray Train finds it
by the trial's stable run name) and log into the same MLflow run (found by its run key).
"""

from __future__ import annotations

import argparse

from harness import cluster, lock, sweep, tracking
from harness.commands.reproduce import add_cluster_options, finish
from harness.config import Experiment
from spikingformer._validation import load_yaml


def run(args: argparse.Namespace) -> int:
    storage = sweep.storage_root(args.storage)
    record = sweep.read_invocation(storage, args.name)
    with lock.hold(storage, args.name, f"experiment {args.name}"):
        experiment = Experiment.from_dict(load_yaml(record["experiment_yaml"]), where=record["experiment_file"],
                                          skip_invalid=record.get("skip_invalid", False))
        store = tracking.Tracking(record["tracking_uri"])
        with sweep.Drive(store, args.name, record["parent_run_id"]) as drive:
            print(cluster.connect(args.address, log_to_driver=args.verbose), flush=True)
            store.client.update_run(drive.parent, status="RUNNING")
            print(f"{args.name}: resuming from {sweep.join(storage, args.name)}", flush=True)
            drive.results = sweep.restore(name=args.name, storage=storage)
        code = drive.conclude(None)
        return finish(code, drive.results, experiment, record["tracking_uri"], args.name, storage)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("resume", help="continue an interrupted `sfh reproduce`", description=__doc__)
    parser.add_argument("name", help="the experiment's tracked name (its folder under --storage), e.g. cifar10")
    add_cluster_options(parser)
    parser.set_defaults(func=run)
