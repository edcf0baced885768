"""Run timm's own model tests on our registered models: every family, as it lands.

``test_timm_models.py`` runs timm 1.0.31's ``tests/test_models.py``, taken from the release at collection
(``timm_source``: the sdist's and the file's checksums checked). Its test groups are parametrized by
``timm.list_models`` at import; here that call answers with our models only (every model registered from
``spikingformer.models``, so a new family is picked up without an edit). A ``module=`` filter counts our
family modules in: timm uses it to pick the models that implement ``forward_intermediates``, and all of
ours do. Items for timm's own models (tests with hard-coded names) are deselected.

What is adjusted, and why, is explicit (``timm_selection``):

- TorchScript groups are expected failures (strict xfail): spikingjelly's neurons, which ``MultiStepLIF``
  extends, cannot be scripted (README, "Models").
- Heavy groups (real forward/backward passes at the paper's fixed input sizes) and the TorchScript ones run
  on the cheapest model of each family, ``HEAVY_MODELS``; every model runs ``test_model_default_cfgs`` (on
  the meta device: a shape-level forward of the whole model, the head, ``num_classes=0`` and
  ``global_pool=''``); the prune contract (timm's slowest, kept out of timm's own CI) runs on ``ONE_MODEL``.
  Without this the file takes tens of minutes on a 2-core CPU (timm's size limits never shrink a fixed-size
  input).
- timm's per-test time limits (``pytest.mark.timeout``, calibrated for its CI runners) become one hang guard,
  ``HANG_GUARD_S``: a test is not failed for being slow on a shared 2-core CPU.
- Groups with nothing to test on our models are named in ``NOT_APPLICABLE``; every other group must have
  an item for our models, or collection stops (no group silently empty).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import timm
from timm.models import split_model_name_tag
from timm_selection import (
    EXPECTED_GROUPS,
    HEAVY_GROUPS,
    HEAVY_MODELS,
    ONE_MODEL,
    ONE_MODEL_GROUPS,
    OURS,
    TORCHSCRIPT_GROUPS,
)

#: Replaces timm's per-test ``timeout`` marks (pytest-timeout): seconds before a test counts as hung.
HANG_GUARD_S = 1200

_list_models = timm.list_models


def _our_models(
    filter: str | list[str] = "",
    module: str | list[str] = "",
    pretrained: bool = False,
    exclude_filters: str | list[str] = "",
    name_matches_cfg: bool = False,
    include_tags: bool | None = None,
) -> list[str]:
    """``timm.list_models`` restricted to our models; any ``module`` filter includes our families."""
    names = _list_models(filter, "", pretrained, exclude_filters, name_matches_cfg, include_tags)
    return [name for name in names if split_model_name_tag(name)[0] in OURS]


timm.list_models = _our_models  # read when pytest imports test_timm_models.py, right after this file


def pytest_configure(config: pytest.Config) -> None:
    for marker in ("base", "cfg", "cfg_nonstd", "forward", "backward", "torchscript", "features", "fxforward",
                   "fxbackward"):
        config.addinivalue_line("markers", f"{marker}: timm's test-suite marker (tests/timm_models)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [item for item in items if item.path.name == "test_timm_models.py"]
    if not here:
        return
    timm.list_models = _list_models
    drop = []
    groups: dict[str, set[str]] = defaultdict(set)
    for item in here:
        model = getattr(getattr(item, "callspec", None), "params", {}).get("model_name")
        group = item.originalname
        heavy = group in HEAVY_GROUPS | TORCHSCRIPT_GROUPS and model not in HEAVY_MODELS
        if model not in OURS or heavy or (group in ONE_MODEL_GROUPS and model != ONE_MODEL):
            drop.append(item)
            continue
        # timm's per-test limits fit its CI runners; on a shared 2-core CPU only a hang guard is meaningful
        item.add_marker(pytest.mark.timeout(HANG_GUARD_S), append=False)
        if group in TORCHSCRIPT_GROUPS:
            reason = "TorchScript cannot script spikingjelly's LIFNode nor the fused LIF's autograd Function"
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        groups[group].add(model)
    whole_file = EXPECTED_GROUPS <= {item.originalname for item in here}
    empty = sorted(group for group in EXPECTED_GROUPS if not groups[group])
    if whole_file and empty:
        raise pytest.UsageError(f"timm test groups with no item for our models: {empty}")
    dropped = set(map(id, drop))
    items[:] = [item for item in items if id(item) not in dropped]
    config.hook.pytest_deselected(items=drop)
