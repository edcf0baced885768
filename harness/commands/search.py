"""``sfh search SEARCH.yaml``: Optuna TPE proposes, ASHA stops the laggards, every trial a tracked DDP run.

The Optuna study lives in an RDB (default ``runs/optuna.db``) under the search's tracked name, so running the
command again adds trials to the same study and TPE learns from all of them. Each invocation is one MLflow
parent run with one child run per trial. At the end the study's best trial is printed and written as an
experiment file of one row (default ``runs/search/<name>-best.yaml``) that ``sfh reproduce`` trains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.options import (
    add_cluster_options,
    add_data_check_option,
    add_failure_option,
    add_study_storage_option,
    add_tracking_option,
    at_least,
)

HELP = "Optuna + ASHA search around a row (Ray + MLflow)"


def run(args: argparse.Namespace) -> int:
    from harness.run.search import search

    return search(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help=HELP, description=__doc__)
    parser.add_argument("search", type=Path, help="search file, e.g. experiments/search/demo.yaml")
    parser.add_argument("--trials", type=at_least(1),
                        help="trials in this invocation (default: the file's num_samples)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long CPU trials on synthetic data (study and MLflow as <name>-smoke)")
    parser.add_argument("--data-root", help="folder with one subfolder per dataset (DIR/cifar10, ...)")
    add_data_check_option(parser)
    add_tracking_option(parser)
    add_study_storage_option(parser)
    parser.add_argument("--out", type=Path, help="best-row experiment file (default: runs/search/<name>-best.yaml)")
    parser.add_argument("--energy-batches", type=at_least(1), default=1,
                        help="evaluation batches of each trial's energy pass")
    add_failure_option(parser)
    add_cluster_options(parser)
    parser.set_defaults(func=run)
