"""What the report reads from MLflow beyond ``harness.results``: per-epoch histories and run artifacts.

A run that is still going, or that died early, has fewer epochs and may lack its artifacts; every
reader here answers "nothing yet" (an empty list, ``None``) instead of failing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

ENERGY_ARTIFACT = "energy_layers.json"


def epoch_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` pairs in epoch order; a resumed run that logged an epoch twice keeps the later value."""
    by_step: dict[int, tuple[int, float]] = {}
    for metric in client.get_metric_history(run_id, key):
        previous = by_step.get(metric.step)
        if previous is None or metric.timestamp >= previous[0]:
            by_step[metric.step] = (metric.timestamp, metric.value)
    return [(step, value) for step, (_, value) in sorted(by_step.items())]


def json_artifact(client: MlflowClient, run_id: str, path: str = ENERGY_ARTIFACT) -> Any | None:
    """A JSON artifact of the run, or ``None`` when the run has not written it (yet) or it is cut short."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
        except (MlflowException, OSError, ValueError):
            return None
