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
    """``(epoch, value)`` pairs in epoch order, one per epoch: the first logged, as ``harness.tracking`` keeps it."""
    by_step: dict[int, float] = {}
    for metric in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
        by_step.setdefault(metric.step, metric.value)
    return sorted(by_step.items())


def json_artifact(client: MlflowClient, run_id: str, path: str = ENERGY_ARTIFACT) -> Any | None:
    """A JSON artifact of the run, or ``None`` when the run has not written it (yet) or it is cut short."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
        except (MlflowException, OSError, ValueError):
            return None
