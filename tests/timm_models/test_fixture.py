"""The vendored timm test file is timm 1.0.31's, unmodified, and runs against the timm we pin."""

from __future__ import annotations

import hashlib
from pathlib import Path

import timm
from timm_selection import HEAVY_MODELS, OURS, SOURCE


def test_vendored_file_is_timm_1_0_31_unmodified() -> None:
    text = (Path(__file__).parent / "test_timm_models.py").read_bytes()
    assert hashlib.sha256(text).hexdigest() == SOURCE["file_sha256"]
    assert timm.__version__ == "1.0.31"


def test_every_family_has_a_heavy_model() -> None:
    """Each family runs the forward/backward/FX groups on its cheapest model; every model runs the cfg group."""
    from spikingformer.models import MODEL_CONFIGS

    families = {MODEL_CONFIGS[name][0] for name in OURS}
    assert sorted(MODEL_CONFIGS[name][0].__name__ for name in HEAVY_MODELS) == sorted(f.__name__ for f in families)
