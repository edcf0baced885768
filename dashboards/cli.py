"""``sfh report [EXP ...]``: the HTML report of experiments (figures included), read from MLflow.

Writes ``<out>/<tracked name>/index.html`` for every tracked variant of each experiment file (the paper's
protocol ``<name>`` and the ``<name>-smoke`` / ``<name>-e<N>`` runs ``sfh reproduce`` tracks apart), and
``<out>/index.html`` linking all reports. With ``--search FILE``: the Pareto front page of a multi-objective
search instead (every trial, the front, the published rows counted the same way). ``sfh`` finds this command
through the ``sfh.commands`` entry point (pyproject.toml): the harness itself never imports ``dashboards``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.options import add_tracking_option

EXPERIMENTS_DIR = Path("experiments")
REPORTS_DIR = Path("runs") / "reports"


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from dashboards.report import write_index, write_report  # matplotlib and MLflow only when a report is made
    from harness import results

    reader = results.RunReader(args.tracking_uri)
    if args.search:
        return _search_pages(args, reader.uri)
    # A grid's impossible points never ran: the report shows the others.
    experiments = [results.load_experiment(p, skip_invalid=True) for p in args.experiments] or results.discover(
        EXPERIMENTS_DIR
    )
    if args.name and len(experiments) != 1:
        raise ValueError("--name selects the tracked name of one experiment file; give exactly one")
    jobs = []
    for experiment in experiments:
        if args.name:
            names = [args.name]
        else:  # a file given by hand is reported even without runs (every row NOT RUN)
            names = reader.variants(experiment) or ([experiment.name] if args.experiments else [])
        jobs += [(experiment, name) for name in names]
    for experiment, name in jobs:
        print(write_report(experiment, reader.rows(experiment, name=name), reader, args.out, name=name))
    across = [line for experiment, name in jobs for line in results.family_lines(experiment, reader.uri, name=name)]
    print(write_index(args.out, across) if jobs else f"no experiment has runs in {reader.uri}")
    return 0


def _search_pages(args: argparse.Namespace, uri: str) -> int:
    """One Pareto-front page per search file given with ``--search``, then the index of every report."""
    from dashboards.report import write_index
    from dashboards.search_report import write_search_report
    from harness.experiment.search_space import load_search

    if args.experiments:
        raise ValueError("give experiment files or --search files, not both")
    for path in args.search:
        print(write_search_report(load_search(path), uri, args.out, name=args.name))
    print(write_index(args.out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="HTML report with figures from MLflow", description=__doc__)
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--name", help="only this tracked name (e.g. demo-e3); default: every variant with runs")
    parser.add_argument("--search", type=Path, action="append", default=[],
                        help="a multi-objective search file: its Pareto front page (repeatable)")
    add_tracking_option(parser)
    parser.add_argument("--out", type=Path, default=REPORTS_DIR, help=f"reports folder (default: {REPORTS_DIR})")
    parser.set_defaults(func=run)
