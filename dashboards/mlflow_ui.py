"""``make mlflow-ui``: the MLflow UI on the harness's tracking store, bound to localhost only.

Usage: ``python -m dashboards.mlflow_ui [--tracking-uri URI] [--port 5000]``. A server URI (http...)
already has a UI, so it is printed instead of started.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HOST = "127.0.0.1"


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for a database store: local host only, one worker, artifacts beside the db."""
    argv = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", tracking_uri]
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        argv += ["--default-artifact-root", (db.parent / "mlartifacts").as_uri()]
    return argv + ["--host", HOST, "--port", str(port), "--workers", "1"]


def main(argv: list[str] | None = None) -> int:
    from harness.results import default_tracking_uri

    parser = argparse.ArgumentParser(prog="python -m dashboards.mlflow_ui", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or runs/mlflow.db")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is a tracking server: open it in a browser.")
        return 0
    command = ui_command(uri, args.port)
    print(f"MLflow UI for {uri} at http://{HOST}:{args.port} (Ctrl-C stops it)", flush=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # the UI stays local: no usage reports either
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
