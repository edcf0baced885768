"""``sfh report [EXP ...]``: the HTML report of experiments (figures included), read from MLflow.

Writes ``<out>/<tracked name>/index.html`` for every tracked variant of each experiment file (the paper's
protocol ``<name>`` and the ``<name>-smoke`` / ``<name>-e<N>`` runs ``sfh reproduce`` tracks apart), and
``<out>/index.html`` linking all reports. The rendering lives in ``dashboards``, imported here lazily: the
harness itself never depends on it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from harness import results
from harness.config import Experiment, load_experiment
from harness.tracking import Tracking, default_tracking_uri
from spikingformer.config import ConfigError

EXPERIMENTS_DIR = Path("experiments")
REPORTS_DIR = Path("runs") / "reports"


def tracked_variants(store: Tracking, experiment: Experiment) -> list[str]:
    """The names under which ``experiment`` has runs: ``<name>``, ``<name>-smoke``, ``<name>[-smoke]-e<N>``."""
    pattern = re.compile(rf"{re.escape(experiment.name)}(-smoke)?(-e\d+)?")
    names = [e.name for e in store.client.search_experiments() if pattern.fullmatch(e.name)]
    return sorted(n for n in names if store.trial_runs(n))


def _discover(folder: Path) -> list[Experiment]:
    """Every experiment file in ``folder``; other YAML there (a standalone TrainConfig) is skipped, said so."""
    found = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            found.append(load_experiment(path))
        except ConfigError as err:
            print(f"sfh report: skipping {path}: not an experiment file ({err})", file=sys.stderr)
    return found


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from dashboards.report import write_index, write_report

    uri = args.tracking_uri or default_tracking_uri()
    store = Tracking(uri)
    experiments = [load_experiment(p) for p in args.experiments] or _discover(EXPERIMENTS_DIR)
    if args.name and len(experiments) != 1:
        raise ValueError("--name selects the tracked name of one experiment file; give exactly one")
    jobs = []
    for experiment in experiments:
        if args.name:
            names = [args.name]
        else:  # a file given by hand is reported even without runs (every row NOT RUN)
            names = tracked_variants(store, experiment) or ([experiment.name] if args.experiments else [])
        jobs += [(experiment, name) for name in names]
    for experiment, name in jobs:
        rows = results.collect(experiment, uri, name=name)
        print(write_report(experiment, rows, uri, args.out, name=name))
    print(write_index(args.out) if jobs else f"no experiment has runs in {uri}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="HTML report with figures from MLflow", description=__doc__)
    parser.add_argument(
        "experiments", nargs="*", type=Path, help="experiment files (default: experiments/*.yaml with runs)"
    )
    parser.add_argument("--name", help="only this tracked name (e.g. demo-e3); default: every variant with runs")
    parser.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db)")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR, help=f"reports folder (default: {REPORTS_DIR})")
    parser.set_defaults(func=run)
