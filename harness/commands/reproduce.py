"""``sfh reproduce EXP.yaml``: train every row (x seed) of a paper table with Ray, track it, print the table.

Already FINISHED (row, seed) runs in MLflow are not trained again, so re-running the command after an
interruption continues where it stopped (``sfh resume`` does the same from Tune's own state). A tracked run
made under another configuration than the row now gives (an edited file) is refused before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ray import tune

from harness import cost, lock, sweep, tracking
from harness.commands.table import format_table
from harness.config import Experiment, load_experiment, tracked_name
from harness.progress import Progress
from harness.specs import check_data_folders, check_tracked, plan
from harness.trial import first_line


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``; argparse reports a refusal naming the flag (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def row_ids(text: str) -> list[str]:
    """An argparse type: comma-separated row ids, each once (two trials of one run key would share its
    MLflow run and Train folder)."""
    ids = [i.strip() for i in text.split(",")]
    if "" in ids:
        raise argparse.ArgumentTypeError(f"an empty row id in {text!r}")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"row(s) {', '.join(twice)} given more than once in {text!r}")
    return ids


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that run trials."""
    parser.add_argument("--storage", default="runs/ray", help="Tune/Train storage: folder or URI (default runs/ray)")
    parser.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS"),
        help="Ray head host:port to join (default $RAY_ADDRESS, else a private local Ray on 127.0.0.2)",
    )
    parser.add_argument("--verbose", action="store_true", help="forward the workers' output (engine logs)")


def finish(code: int, results: tune.ResultGrid | None, experiment: Experiment, tracking_uri: str, name: str,
           storage: str) -> int:
    """Print the table, each failed trial and, unless every trial finished, how to go on; returns ``code``."""
    print()
    print(format_table(experiment, tracking_uri, name=name), end="")
    for result in results or []:
        if result.error is not None:
            print(f"trial {result.path} failed: {first_line(result.error)}", file=sys.stderr)
    if code == sweep.EXIT_INTERRUPTED:
        print(f"\n{name}: interrupted; the unfinished trials are marked KILLED in MLflow and continue from their "
              f"last checkpoints with:\n  {sweep.resume_hint(name, storage)}", file=sys.stderr)
    elif code:
        print(f"\n{name}: not every trial finished (why: under the table above, and on each run in MLflow: its "
              f"sfh.failure tag and failure.txt). Once the cause is fixed, run `sfh reproduce {experiment.source}` "
              "with the same options again: finished rows are skipped, the others train again.", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.experiment, skip_invalid=args.skip_invalid)
    name = tracked_name(experiment, smoke=args.smoke, epochs=args.epochs)
    storage = sweep.storage_root(args.storage)
    uri = args.tracking_uri or tracking.default_tracking_uri()
    specs = plan(
        experiment, name=name, rows=args.rows, seeds=args.seeds, tracking_uri=uri,
        train_storage=sweep.join(storage, name, "train"), smoke=args.smoke, epochs=args.epochs,
        data_root=args.data_root, energy_batches=args.energy_batches, max_failures=args.max_failures,
    )  # every row is validated here, before Ray starts
    if not (args.smoke or args.skip_data_check):
        check_data_folders(specs)
    with lock.hold(storage, name, f"experiment {name}"):
        store = tracking.Tracking(uri)
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
        cost.announce(store, name, pending, args.max_device_hours)  # the plan's projection; refuses above the limit
        with sweep.Drive(store, name) as drive:
            tags = {"sfh.command": "reproduce", "sfh.experiment_file": str(args.experiment),
                    tracking.PAPER_TABLE: experiment.paper.table, "sfh.storage": storage}
            pending, drive.parent = sweep.start(pending, address=args.address, verbose=args.verbose, store=store,
                                                name=name, tags=tags)
            sweep.write_invocation(storage, name, {
                "experiment_file": str(args.experiment), "experiment_yaml": Path(args.experiment).read_text(),
                "name": name, "tracking_uri": uri, "parent_run_id": drive.parent, "skip_invalid": args.skip_invalid,
            })
            print(f"{name}: {len(pending)} trial(s); Tune state in {sweep.join(storage, name)}; MLflow {uri}",
                  flush=True)
            grid = {"trial": tune.grid_search([dataclasses.asdict(s) for s in pending])}
            drive.results = sweep.run(
                name=name, storage=storage, param_space=grid, max_concurrent=args.max_concurrent,
                callbacks=[Progress()],
            )
        code = drive.conclude([s.run_key for s in pending])
        return finish(code, drive.results, experiment, uri, name, storage)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reproduce", help="train a paper table's rows (Ray + MLflow)", description=__doc__)
    parser.add_argument("experiment", type=Path, help="experiment file, e.g. experiments/cifar10.yaml")
    parser.add_argument("--rows", type=row_ids, help="comma-separated row ids, each once (default: all rows)")
    parser.add_argument("--seeds", type=at_least(1), help="seeds per row (default: the file's `seeds`)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="a grid's impossible points are dropped (named on stderr) instead of refusing the file")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long CPU run of each row on synthetic data (tracked as <name>-smoke)")
    parser.add_argument("--epochs", type=at_least(1), help="total epochs of every row (tracked as <name>-e<N>)")
    parser.add_argument("--data-root", help="folder with one subfolder per dataset (DIR/cifar10, DIR/imagenet, ...)")
    parser.add_argument("--skip-data-check", action="store_true",
                        help="do not check the rows' data folders on this machine before Ray starts (the data "
                             "lives only on the worker nodes)")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    parser.add_argument("--max-concurrent", type=at_least(1),
                        help="trials at once (default: as many as the cluster fits)")
    parser.add_argument("--energy-batches", type=at_least(1), default=8, help="evaluation batches of the energy pass")
    parser.add_argument("--max-device-hours", type=float, metavar="H",
                        help="refuse to launch when the latest `sfh plan` projects more device-hours (or has none)")
    parser.add_argument("--max-failures", type=at_least(0), default=2,
                        help="restarts per trial from its last checkpoint after a lost worker, process or node "
                             "(a NaN loss, a config or data error fails at once)")
    add_cluster_options(parser)
    parser.set_defaults(func=run)
