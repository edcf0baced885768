"""Waiting for a local HTTP server (MLflow, its UI, optuna-dashboard) to answer."""
from __future__ import annotations

import urllib.request

from helpers.ray_nodes import wait_for


def answers(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_serving(url: str, timeout: float, what: str) -> None:
    wait_for(lambda: answers(url), timeout, what, every=1.0)
