"""timm registrations of every paper configuration (names fixed by DESIGN.md).

``import spikingformer`` then ``timm.create_model("spikingformer_8_768")``; any constructor argument
(``num_classes``, ``num_heads``, ``T``, ``drop_path_rate``, ...) can be overridden as a keyword.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model

from spikingformer.models.base import SpikingTransformer
from spikingformer.models.spikformer import Spikformer
from spikingformer.models.spikingformer import Spikingformer
from spikingformer.neurons import TAU_DVS

IMAGENET = dict(layout="imagenet", img_size=224, in_chans=3, num_classes=1000, num_heads=8, depth=8, T=4)
CIFAR = dict(layout="cifar", img_size=32, in_chans=3, num_classes=10, T=4)
DVS = dict(layout="dvs", img_size=128, in_chans=2, num_classes=11, num_heads=16, T=16, tau=TAU_DVS)

#: name -> (family class, default constructor arguments)
MODEL_CONFIGS: dict[str, tuple[type[SpikingTransformer], dict[str, Any]]] = {
    "spikingformer_8_384": (Spikingformer, {**IMAGENET, "embed_dim": 384}),
    "spikingformer_8_512": (Spikingformer, {**IMAGENET, "embed_dim": 512}),
    "spikingformer_8_768": (Spikingformer, {**IMAGENET, "embed_dim": 768}),
    "spikingformer_cifar_4_256": (Spikingformer, {**CIFAR, "embed_dim": 256, "depth": 4, "num_heads": 8}),
    "spikingformer_cifar_2_384": (Spikingformer, {**CIFAR, "embed_dim": 384, "depth": 2, "num_heads": 12}),
    "spikingformer_cifar_4_384": (Spikingformer, {**CIFAR, "embed_dim": 384, "depth": 4, "num_heads": 12}),
    "spikingformer_dvs_2_256": (Spikingformer, {**DVS, "embed_dim": 256, "depth": 2}),
    "spikformer_8_384": (Spikformer, {**IMAGENET, "embed_dim": 384}),
    "spikformer_8_512": (Spikformer, {**IMAGENET, "embed_dim": 512}),
    "spikformer_8_768": (Spikformer, {**IMAGENET, "embed_dim": 768}),
    "spikformer_cifar_4_256": (Spikformer, {**CIFAR, "embed_dim": 256, "depth": 4, "num_heads": 8}),
    "spikformer_cifar_2_384": (Spikformer, {**CIFAR, "embed_dim": 384, "depth": 2, "num_heads": 12}),
    "spikformer_cifar_4_384": (Spikformer, {**CIFAR, "embed_dim": 384, "depth": 4, "num_heads": 12}),
}

_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def build_model(name: str, **overrides: Any) -> SpikingTransformer:
    """Build a registered configuration without going through timm."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(MODEL_CONFIGS)}")
    cls, defaults = MODEL_CONFIGS[name]
    return cls(**{**defaults, **overrides})


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs: Any) -> SpikingTransformer:
        if pretrained:
            raise ValueError(
                f"{name}: no hub weights are published; build the model and call "
                "spikingformer.load_upstream_state_dict(model, torch.load(path)) for upstream checkpoints"
            )
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        return build_model(name, **kwargs)

    create.__name__ = name
    create.__qualname__ = name
    create.__doc__ = f"{name}: {MODEL_CONFIGS[name][0].__name__} with {MODEL_CONFIGS[name][1]}"
    return create


for _name in MODEL_CONFIGS:
    globals()[_name] = register_model(_entrypoint(_name))
