"""``sfh plan EXP.yaml``: what reproducing a table will cost, measured on its cluster before anything trains.

The command joins Ray as ``sfh reproduce`` would (``--address``, else a private local Ray) and runs one
short trial per row there (``harness.cost.measuring_trial``): the row's model and input pipeline run ``--steps``
training steps at the row's per-worker batch in the recipe's precision (``spikingformer.training.step_cost``), side by
side as the trials would run. ``harness.cost.projection`` projects them over epochs, steps per epoch, seeds and the
experiment's workers, with the measured launch and trial start-up, to wall-clock, device-hours and kWh,
prints the table (or JSON) and logs it to the experiment's MLflow parent run, where ``sfh reproduce`` reads
it back.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.options import add_cluster_options, add_row_options, add_tracking_option, at_least, positive

HELP = "measure each row's step on its cluster, project the table's cost"


def run(args: argparse.Namespace) -> int:
    from harness.cost.plans import make_plan

    return make_plan(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help=HELP, description=__doc__)
    parser.add_argument("experiment", type=Path, help="experiment file, e.g. experiments/imagenet.yaml")
    add_row_options(parser)
    parser.add_argument("--steps", type=at_least(1), default=5, metavar="N",
                        help="timed training steps per row, after one warm-up step (default 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="the devices to measure and project on (default auto: the rows' use_gpu, GPUs when "
                             "the cluster has them)")
    parser.add_argument("--watts", type=positive, metavar="W",
                        help="power per device for the energy estimate where the device has no energy counter")
    parser.add_argument("--price-per-device-hour", type=positive, metavar="PRICE",
                        help="what one device-hour (a GPU, or a CPU worker) costs on the cluster, in your currency: "
                             "adds a cost column and the table's total")
    parser.add_argument("--max-concurrent", type=at_least(1), help="trials at once, as in sfh reproduce")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--out", help="also write the table or JSON to this file")
    add_tracking_option(parser)
    add_cluster_options(parser)
    parser.set_defaults(func=run)
