"""``sfh resume NAME``: continue an experiment whose driver died, from its Tune state in the storage folder.

Finished trials are not run again; interrupted ones continue from their last checkpoint (Ray Train finds it
by the trial's stable run name) and log into the same MLflow run (found by its run key).
"""

from __future__ import annotations

import argparse

from harness.options import add_cluster_options

HELP = "continue an interrupted `sfh reproduce`"


def run(args: argparse.Namespace) -> int:
    from harness.run.launch import resume

    return resume(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("resume", help=HELP, description=__doc__)
    parser.add_argument("name", help="the experiment's tracked name (its folder under --storage), e.g. cifar10")
    add_cluster_options(parser)
    parser.set_defaults(func=run)
