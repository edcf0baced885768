"""``sfh table [EXP ...]``: the paper-vs-reproduced table of experiments, read from MLflow, and what each row
cost beside its plan (``harness.cost``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import cost, results
from harness.config import Experiment, discover, load_experiment
from harness.grid import NO_REFERENCE, axes
from harness.tracking import Tracking, default_tracking_uri

EXPERIMENTS_DIR = Path("experiments")


def format_table(experiment: Experiment, tracking_uri: str, *, name: str | None = None) -> str:
    """One experiment's markdown table, under a title line naming the paper table and the tolerance."""
    rows = results.collect(experiment, tracking_uri, name=name)
    tol = experiment.tolerance
    title = (
        f"## {name or experiment.name}: {experiment.paper.table} (arXiv {experiment.paper.arxiv})\n\n"
        f"PASS within ±{tol.pass_pp:g} pp of the paper's top-1, WARN within ±{tol.warn_pp:g} pp, else FAIL.\n\n"
    )
    grid = axes(experiment.rows)
    if grid:
        title += (f"Grid over {' x '.join(grid)}: {len(experiment.rows)} points; a point equal to a paper row carries "
                  f"its numbers (paper row column), the others have {NO_REFERENCE}.\n\n")
    store = Tracking(tracking_uri)
    plan = cost.latest_plan(store, name or experiment.name)
    return title + results.render_markdown(rows) + "\n" + cost.render_costs(cost.row_costs(store, rows, plan), plan)


def run(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    # A grid's impossible points never ran: its table shows the others (and names those on stderr).
    experiments = [load_experiment(p, skip_invalid=True) for p in args.experiments] or discover(EXPERIMENTS_DIR)
    if not args.experiments:  # all files: only those with runs
        store = Tracking(uri)
        experiments = [e for e in experiments if store.find_experiment(e.name) is not None]
    if args.name and len(experiments) != 1:
        raise ValueError("--name selects the tracked name of one experiment file; give exactly one")
    if args.format == "csv":  # one header over the rows of every experiment (its own column)
        rows = [row for e in experiments for row in results.collect(e, uri, name=args.name)]
        text = results.render_csv(rows) if experiments else ""
    else:
        text = "\n".join(format_table(e, uri, name=args.name) for e in experiments)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text or f"no experiment has runs in {uri}", end="" if text else "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("table", help="paper vs reproduced table from MLflow", description=__doc__)
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--name", help="tracked name when it differs from the file's (e.g. cifar10-smoke, demo-e3)")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    parser.add_argument("--out", help="also write the table to this file")
    parser.set_defaults(func=run)
