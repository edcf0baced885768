"""timm's test file comes from the pinned release, checked, and every family has a model for its heavy groups."""

from __future__ import annotations

import hashlib

import timm
from timm_selection import HEAVY_MODELS, OURS
from timm_source import FILE_SHA256, VERSION, timm_test_file


def test_timm_tests_come_from_the_pinned_release() -> None:
    assert timm.__version__ == VERSION
    assert hashlib.sha256(timm_test_file().read_bytes()).hexdigest() == FILE_SHA256


def test_every_family_has_a_heavy_model() -> None:
    """Each family runs the forward/backward/FX groups on its cheapest model; every model runs the cfg group."""
    from spikingformer.models import MODEL_CONFIGS

    families = {MODEL_CONFIGS[name][0] for name in OURS}
    assert sorted(MODEL_CONFIGS[name][0].__name__ for name in HEAVY_MODELS) == sorted(f.__name__ for f in families)
