"""``sfh table [EXP ...]``: the paper-vs-reproduced table of experiments, read from MLflow, and what each row
cost beside its plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.options import add_table_output_options, add_tracking_option

HELP = "paper vs reproduced table from MLflow"
EXPERIMENTS_DIR = Path("experiments")


def run(args: argparse.Namespace) -> int:
    from harness import results
    from harness.tracking import Tracking, default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    # A grid's impossible points never ran: its table shows the others (and names those on stderr).
    experiments = ([results.load_experiment(p, skip_invalid=True) for p in args.experiments]
                   or results.discover(EXPERIMENTS_DIR))
    if not args.experiments:  # all files: only those with runs
        store = Tracking(uri)
        experiments = [e for e in experiments if store.find_experiment(e.name) is not None]
    if args.name and len(experiments) != 1:
        raise ValueError("--name selects the tracked name of one experiment file; give exactly one")
    if args.format == "csv":  # one header over the rows of every experiment (its own column), with their costs
        store = Tracking(uri)
        rows, costs = [], []
        for e in experiments:
            collected = results.collect(e, uri, name=args.name)
            rows += collected
            costs += results.row_costs(store, collected, results.latest_plan(store, args.name or e.name))
        text = results.render_csv(rows, costs) if experiments else ""
    else:
        text = "\n".join(results.format_table(e, uri, name=args.name) for e in experiments)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text or f"no experiment has runs in {uri}", end="" if text else "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("table", help=HELP, description=__doc__)
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--name", help="tracked name when it differs from the file's (e.g. cifar10-smoke, demo-e3)")
    add_tracking_option(parser)
    add_table_output_options(parser)
    parser.set_defaults(func=run)
