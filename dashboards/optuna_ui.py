"""``make optuna-dashboard``: optuna-dashboard on the searches' Optuna storage, bound to localhost only.

Usage: ``python -m dashboards.optuna_ui [--study-storage URL] [--port 8080]``. It shows every study of the
storage: trials with their state (PRUNED: stopped by ASHA), intermediate values per epoch, objective names,
the Pareto front of a multi-objective study, and each trial's MLflow run id among its user attributes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.options import add_study_storage_option, default_study_storage

HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def dashboard_command(storage: str, port: int) -> list[str]:
    """The ``optuna-dashboard`` command line: this host only, the venv's own executable."""
    return [str(Path(sys.executable).with_name("optuna-dashboard")), storage, "--host", HOST, "--port", str(port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.optuna_ui", description=__doc__.splitlines()[0])
    add_study_storage_option(parser)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    args = parser.parse_args(argv)
    storage = args.study_storage or default_study_storage()
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        print(f"no Optuna storage at {storage}: run a search first (make search, make search-pareto)", file=sys.stderr)
        return 1
    command = dashboard_command(storage, args.port)
    print(f"optuna-dashboard for {storage} at http://{HOST}:{args.port} (Ctrl-C stops it)", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
