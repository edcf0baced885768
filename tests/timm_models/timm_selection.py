"""Which of timm's model tests run on which of our models (read by ``conftest.py`` and ``test_fixture.py``).

timm's test file is timm 1.0.31's ``tests/test_models.py``, fetched from the release (``timm_source``). Heavy
groups (and the TorchScript ones, expected failures) run on the cheapest model of each family, ``HEAVY_MODELS``;
``NOT_APPLICABLE`` names the groups with nothing to test on ours.
"""

from __future__ import annotations

from collections import defaultdict

from spikingformer.models import MODEL_CONFIGS
from spikingformer.models.registry import model_names

OURS = frozenset(model_names())

#: Groups that run every model through real forward/backward passes at the fixed input size.
HEAVY_GROUPS = {
    "test_model_forward",
    "test_model_backward",
    "test_model_forward_features",
    "test_model_forward_intermediates_features",
    "test_model_forward_intermediates",
    "test_model_forward_fx",
    "test_model_backward_fx",
}
#: timm's slowest group (every tap pruned, run and back-propagated), which timm itself keeps out of its CI:
#: on ``ONE_MODEL`` only. Pruning is the base class's code for every family.
ONE_MODEL_GROUPS = {"test_prune_intermediate_layers_contract"}
#: TorchScript groups: expected to fail until the neurons can be scripted.
TORCHSCRIPT_GROUPS = {"test_model_forward_torchscript", "test_model_forward_fx_torchscript"}
#: Every group that must run on our models.
EXPECTED_GROUPS = HEAVY_GROUPS | TORCHSCRIPT_GROUPS | ONE_MODEL_GROUPS | {"test_model_default_cfgs"}
#: Groups of the file with nothing to test on our models, and why.
NOT_APPLICABLE = {
    "test_model_inference": "compares against tensors of timm's hub weights; we publish none",
    "test_model_load_pretrained": "models with published weights only (list_models(pretrained=True))",
    "test_model_features_pretrained": "models with published weights only",
    "test_model_default_cfgs_non_std": "timm's non-standard (ViT-like token output) name patterns",
    "test_model_features_space2depth_reduction": "efficientnet_h/x only",
}


def _cost(name: str) -> int:
    """Relative cost of one forward: width x depth x pixels x time steps (defaults where a family differs)."""
    args = MODEL_CONFIGS[name][1]
    return args.get("embed_dim", 1) * args.get("depth", 1) * args.get("img_size", 1) ** 2 * args.get("T", 1)


def _heavy_models() -> frozenset[str]:
    """The cheapest registered model of each family."""
    by_family: dict[type, list[str]] = defaultdict(list)
    for name in OURS:
        by_family[MODEL_CONFIGS[name][0]].append(name)
    return frozenset(min(names, key=lambda n: (_cost(n), n)) for names in by_family.values())


HEAVY_MODELS = _heavy_models()
#: The cheapest model of all.
ONE_MODEL = min(HEAVY_MODELS, key=lambda n: (_cost(n), n))
