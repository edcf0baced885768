"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness.cli import TELEMETRY_OFF

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared reference folder {SHARED} is missing (it sits beside the checkout)")
    return SHARED


@pytest.fixture(autouse=True, scope="session")
def _nothing_leaves_loopback() -> Iterator[None]:
    """Ray usage stats and MLflow telemetry off for every in-process use and every subprocess a test starts."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in TELEMETRY_OFF.items():
            patch.setenv(key, value)
        yield
