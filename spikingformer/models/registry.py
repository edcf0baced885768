"""The timm glue every family file shares: dataset cfgs, constructor presets, the build helper, the name index.

A family file registers its paper configurations exactly as timm's own model files do (see
``spikingformer.py``): ``default_cfgs = generate_default_cfgs({...})`` from the dataset cfgs below, then
one ``@register_model`` function per configuration that calls :func:`create_model_with_cfg`. Then
``import spikingformer`` and ``timm.create_model("spikingformer_8_768")``; any constructor argument
(``num_classes``, ``num_heads``, ``T``, ``drop_path_rate``, ...) can be overridden as a keyword, and
``timm.data.resolve_data_config({}, model=m)`` gives the model's dataset settings.

:data:`MODEL_CONFIGS` (name -> (family class, default constructor arguments)) and :func:`build_model`
are the library's own view of that timm registry: every model registered from ``spikingformer.models``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import timm
import torch
from timm.models import build_model_with_cfg, list_models, model_entrypoint

from spikingformer.checkpoints.upstream import checkpoint_filter_fn
from spikingformer.data.pixel_stats import CIFAR_MEAN, CIFAR_STD, DVS_MEAN, DVS_STD, IMAGENET_MEAN, IMAGENET_STD
from spikingformer.neurons import TAU_DVS

ModelT = TypeVar("ModelT", bound=torch.nn.Module)

# timm pretrained cfgs per dataset: what timm.data.resolve_data_config returns for a model. pool_size is
# the token grid a 224 / 32 / 128 input leaves (a family with another downsampling overrides it).
IMAGENET_CFG: dict[str, Any] = dict(
    input_size=(3, 224, 224), pool_size=(14, 14), num_classes=1000,
    mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic", crop_pct=1.0,
)
CIFAR10_CFG: dict[str, Any] = dict(
    input_size=(3, 32, 32), pool_size=(8, 8), num_classes=10,
    mean=CIFAR_MEAN, std=CIFAR_STD, interpolation="bicubic", crop_pct=1.0,
)
#: DVS128 Gesture: one event frame is 2 polarities x 128 x 128 (the model takes T of them).
DVS128_CFG: dict[str, Any] = dict(
    input_size=(2, 128, 128), pool_size=(8, 8), num_classes=11,
    mean=DVS_MEAN, std=DVS_STD, interpolation="nearest", crop_pct=1.0,
)

# Constructor presets per dataset, matching the cfgs above; each registered function adds its width/depth.
IMAGENET_ARGS: dict[str, Any] = dict(layout="imagenet", img_size=224, in_chans=3, num_classes=1000, depth=8,
                                     num_heads=8, T=4)
CIFAR_ARGS: dict[str, Any] = dict(layout="cifar", img_size=32, in_chans=3, num_classes=10, T=4)
DVS_ARGS: dict[str, Any] = dict(layout="dvs", img_size=128, in_chans=2, num_classes=11, num_heads=16, T=16,
                                tau=TAU_DVS)


#: Keywords timm's factory passes to an entrypoint that are not constructor arguments of the model.
FACTORY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "device", "dtype", "features_only",
                  "feature_cls")


def pretrained_cfg(data_cfg: dict[str, Any], first_conv: str, **kwargs: Any) -> dict[str, Any]:
    """A family's timm pretrained cfg for one dataset: no hub weights, a fixed input size, ``head``."""
    return {**data_cfg, "first_conv": first_conv, "classifier": "head", "fixed_input_size": True, **kwargs}


def create_model_with_cfg(model_cls: type[ModelT], variant: str, pretrained: bool, **kwargs: Any) -> ModelT:
    """timm's ``build_model_with_cfg`` with the upstream checkpoint filter as ``pretrained_filter_fn``.

    ``features_only=True`` gives timm's FeatureGetterNet over ``forward_intermediates`` (the last
    ``out_indices`` taps, 3 by default, as timm's ViTs). The full constructor arguments are kept as timm's
    reconstruction arguments (``get_model_args``).
    """
    feature_cfg = dict(feature_cls="getter", out_indices=kwargs.pop("out_indices", 3))
    model = build_model_with_cfg(
        model_cls, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg, **kwargs
    )
    model._model_args = {k: v for k, v in kwargs.items() if k not in FACTORY_KWARGS}
    return model


def model_names() -> list[str]:
    """Every model registered with timm from ``spikingformer.models`` (all families), in timm's order."""
    return [name for name in list_models() if model_entrypoint(name).__module__.startswith(__package__)]


class _RegisteredConfigs(Mapping[str, tuple[type[torch.nn.Module], dict[str, Any]]]):
    """name -> (family class, default constructor arguments), read off a meta-device build on first use."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[type[torch.nn.Module], dict[str, Any]]] = {}

    def __getitem__(self, name: str) -> tuple[type[torch.nn.Module], dict[str, Any]]:
        if name not in self._cache:
            if name not in model_names():
                raise KeyError(name)
            with torch.device("meta"):
                model = timm.create_model(name)
            self._cache[name] = (type(model), dict(model._model_args))
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(model_names())

    def __len__(self) -> int:
        return len(model_names())

    def __contains__(self, name: object) -> bool:
        return name in model_names()


MODEL_CONFIGS = _RegisteredConfigs()


def unknown_model(name: str) -> str:
    """Why ``name`` is refused, with the closest registered names (``sfh params`` lists them all)."""
    near = difflib.get_close_matches(name, list(MODEL_CONFIGS), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(n) for n in near)}?" if near else f"{len(MODEL_CONFIGS)} are registered"
    return f"unknown model {name!r}; {hint} (`sfh params` lists them)"


def build_model(name: str, **overrides: Any) -> torch.nn.Module:
    """Build a registered configuration through timm (so it carries its ``pretrained_cfg``)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(unknown_model(name))
    return timm.create_model(name, **overrides)


def model_label(name: str, **overrides: Any) -> str:
    """What a configuration is: its registered name, or, when ``overrides`` change its depth or width, the
    family with its real depth-width and where it came from (``Spikingformer-1-64, from spikingformer_cifar_2_384``).
    """
    family, defaults = MODEL_CONFIGS[name]
    built = {**defaults, **overrides}
    if all(built.get(key) == defaults.get(key) for key in ("depth", "embed_dim")):
        return name
    return f"{family.__name__}-{built.get('depth')}-{built.get('embed_dim')}, from {name}"


@dataclass(frozen=True)
class InputSpec:
    """What a model consumes: one sample's shape, static images or event frames, and the class count."""

    input_shape: tuple[int, ...]
    input_kind: str
    num_classes: int


def input_spec(name: str, **kwargs: Any) -> InputSpec:
    """What the registered ``name`` built with ``kwargs`` consumes, read off a meta-device instance: exact, and no
    weights are allocated."""
    with torch.device("meta"):
        instance = build_model(name, **kwargs)
    return InputSpec(tuple(instance.input_shape), instance.input_kind, instance.num_classes)


def batch_coupling(name: str, **overrides: Any) -> str | None:
    """What couples a sample of this configuration to the rest of its batch (the family's declaration,
    ``SpikingTransformer.batch_coupling``), or None; where something does, its figures depend on the per-rank batch."""
    family, defaults = MODEL_CONFIGS[name]
    return family.batch_coupling({**defaults, **overrides})
