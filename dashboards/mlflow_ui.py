"""``make mlflow-ui``: the MLflow UI on the harness's tracking store, bound to localhost only.

Usage: ``python -m dashboards.mlflow_ui [--tracking-uri URI] [--port 5000] [--jobs]``. A server URI (http...)
already has a UI, so it is printed instead of started. MLflow's job runner (GenAI evaluation and trace jobs, a
pool of worker processes beside the server) is off unless ``--jobs`` asks for it: browsing runs needs none of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HOST = "127.0.0.1"
#: MLflow reads this when its server starts: whether to launch the job runner and its workers.
JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for a database store: local host only, one worker, artifacts beside the db."""
    argv = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", tracking_uri]
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        argv += ["--default-artifact-root", (db.parent / "mlartifacts").as_uri()]
    return argv + ["--host", HOST, "--port", str(port), "--workers", "1"]


def ui_environment(jobs: bool) -> dict[str, str]:
    """The server's environment: no usage reports, and the job runner only when asked for."""
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
            JOB_EXECUTION: "true" if jobs else "false"}


def experiment_links(tracking_uri: str, port: int) -> list[str]:
    """One line per experiment the harness tracked: its name and the link that opens its results view."""
    from harness import tracking

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if tracking_uri.startswith("sqlite:///") and not db.is_file():
        return []
    found = tracking.Tracking(tracking_uri).client.search_experiments(
        filter_string=f"tags.`{tracking.EXPERIMENT_KIND}` = '{tracking.MODEL_TRAINING}'")
    return [f"  {e.name}: {experiment_url(port, e.experiment_id)}" for e in sorted(found, key=lambda e: e.name)]


def base_url(port: int) -> str:
    """The experiments list. MLflow 3's UI keeps its GenAI / Model training switch per browser, not per experiment
    (it does not read the experiment's kind tag): a link to the list cannot choose it, a results link can."""
    return f"http://{HOST}:{port}/#/experiments"


def experiment_url(port: int, experiment_id: str) -> str:
    """An experiment's runs table as the harness saved it: trial runs, best top-1 first, final figures shown."""
    from harness.tracking import RESULTS_VIEW

    return (f"http://{HOST}:{port}/#/experiments/{experiment_id}/runs?viewStateShareKey={RESULTS_VIEW}"
            "&workflowType=machine_learning")


def main(argv: list[str] | None = None) -> int:
    from harness.results import default_tracking_uri

    parser = argparse.ArgumentParser(prog="python -m dashboards.mlflow_ui", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or runs/mlflow.db")
    parser.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    parser.add_argument("--jobs", action="store_true", help="also start MLflow's job runner (GenAI jobs; off)")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is a tracking server: open it in a browser.")
        return 0
    command = ui_command(uri, args.port)
    links = experiment_links(uri, args.port)
    print(f"MLflow UI for {uri} (Ctrl-C stops it), ready in under a minute at\n  {base_url(args.port)}\n"
          "  (first time in this browser: click 'Model training' at the top left, it is remembered)", flush=True)
    if links:
        print("each experiment's results (its runs, best top-1 first):\n" + "\n".join(links), flush=True)
    os.execve(command[0], command, ui_environment(args.jobs))


if __name__ == "__main__":
    sys.exit(main())
