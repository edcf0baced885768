"""``sfh report [EXP ...]``: the HTML report of experiments (figures included), read from MLflow.

Writes ``<out>/<name>/index.html`` per experiment and ``<out>/index.html`` linking them. The rendering
lives in ``dashboards`` (imported here, lazily: the harness itself never depends on it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness import results
from harness.config import load_experiment
from harness.tracking import Tracking, default_tracking_uri

EXPERIMENTS_DIR = Path("experiments")
REPORTS_DIR = Path("runs") / "reports"


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from dashboards.report import write_index, write_report

    uri = args.tracking_uri or default_tracking_uri()
    paths = args.experiments or sorted(EXPERIMENTS_DIR.glob("*.yaml"))
    experiments = [load_experiment(p) for p in paths]
    if not args.experiments:  # all files: only those with runs
        store = Tracking(uri)
        experiments = [e for e in experiments if store.find_experiment(e.name) is not None]
    if args.name and len(experiments) != 1:
        raise ValueError("--name selects the tracked name of one experiment file; give exactly one")
    for experiment in experiments:
        name = args.name or experiment.name
        rows = results.collect(experiment, uri, name=name)
        print(write_report(experiment, rows, uri, args.out, name=name))
    print(write_index(args.out) if experiments else f"no experiment has runs in {uri}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="HTML report with figures from MLflow", description=__doc__)
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--name", help="tracked name when it differs from the file's (e.g. demo-e3)")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR, help=f"reports folder (default: {REPORTS_DIR})")
    parser.set_defaults(func=run)
