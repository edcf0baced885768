"""Command-line options and value types that several ``sfh`` commands share, defined once.

Light on purpose (argparse only): every command's parser is built from here without importing Ray, MLflow or
torch, so ``sfh --help`` and ``sfh X --help`` answer at once.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

#: Where runs are tracked when neither ``--tracking-uri`` nor ``$MLFLOW_TRACKING_URI`` says.
TRACKING_HELP = "MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)"


def default_study_storage(runs_dir: str | Path = "runs") -> str:
    """Where searches keep their Optuna studies unless ``--study-storage`` says: ``runs/optuna.db`` (absolute)."""
    return f"sqlite:///{Path(runs_dir).resolve() / 'optuna.db'}"


def add_study_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study-storage", help="Optuna storage URL (default: sqlite:///runs/optuna.db)")


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


def positive(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


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


def add_tracking_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help=TRACKING_HELP)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where trials run and keep their state: the commands that start Ray."""
    parser.add_argument("--storage", default="runs/ray", help="Tune/Train storage: folder or URI (default runs/ray)")
    parser.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS"),
        help="Ray head host:port to join (default $RAY_ADDRESS, else a private local Ray on 127.0.0.2)",
    )
    parser.add_argument("--verbose", action="store_true", help="forward the workers' output (engine logs)")


def add_row_options(parser: argparse.ArgumentParser) -> None:
    """Which rows of an experiment file, and how the command line changes them: reproduce and plan alike."""
    parser.add_argument("--rows", type=row_ids, help="comma-separated row ids, each once (default: all rows)")
    parser.add_argument("--seeds", type=at_least(1), help="seeds per row (default: the file's `seeds`)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="a grid's impossible points are dropped (named on stderr) instead of refusing the file")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long CPU run of each row on synthetic data (tracked as <name>-smoke)")
    parser.add_argument("--epochs", type=at_least(1), help="total epochs of every row (tracked as <name>-e<N>)")
    parser.add_argument("--data-root", help="folder with one subfolder per dataset (DIR/cifar10, DIR/imagenet, ...)")


def add_data_check_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-data-check", action="store_true",
                        help="do not check the rows' data folders on this machine before Ray starts (the data "
                             "lives only on the worker nodes)")


def add_failure_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-failures", type=at_least(0), default=2,
                        help="restarts per trial from its last checkpoint after a lost worker, process or node "
                             "(a NaN loss, a config or data error fails at once)")


def add_table_output_options(parser: argparse.ArgumentParser) -> None:
    """The tables' output: markdown or CSV, printed and optionally written to a file."""
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    parser.add_argument("--out", help="also write the table to this file")


def closest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when ``word`` is close to one of ``choices``, else ``""``."""
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
