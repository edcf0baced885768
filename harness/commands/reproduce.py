"""``sfh reproduce EXP.yaml``: train every row (x seed) of a paper table with Ray, track it, print the table.

Already FINISHED (row, seed) runs in MLflow are not trained again, so re-running the command after an
interruption continues where it stopped (``sfh resume`` does the same from Tune's own state). A tracked run
made under another configuration than the row now gives (an edited file) is refused before Ray starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.options import (
    add_cluster_options,
    add_data_check_option,
    add_failure_option,
    add_row_options,
    add_tracking_option,
    at_least,
)

HELP = "train a paper table's rows (Ray + MLflow)"


def run(args: argparse.Namespace) -> int:
    from harness.run.launch import reproduce

    return reproduce(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reproduce", help=HELP, description=__doc__)
    parser.add_argument("experiment", type=Path, help="experiment file, e.g. experiments/cifar10.yaml")
    add_row_options(parser)
    add_data_check_option(parser)
    add_tracking_option(parser)
    parser.add_argument("--max-concurrent", type=at_least(1),
                        help="trials at once (default: as many as the cluster fits)")
    parser.add_argument("--energy-batches", type=at_least(1), default=8, help="evaluation batches of the energy pass")
    parser.add_argument("--max-device-hours", type=float, metavar="H",
                        help="refuse to launch when the latest `sfh plan` projects more device-hours (or has none)")
    add_failure_option(parser)
    add_cluster_options(parser)
    parser.set_defaults(func=run)
