"""Import of checkpoints written by the upstream code of each model family.

Upstream names its modules per file (``patch_embed.proj1_conv``, ``block.0.mlp.mlp1_bn``, Spikformer
CIFAR's ``q_linear``...), so each family declares, for its own layout, a short list of regex ``Rule``s
that rewrite an upstream key prefix into ours (``model.upstream_key_rules()``) and the upstream keys it
drops (``model.UPSTREAM_UNUSED``): a new family brings its own mapping and nothing here changes.
Loading is strict: apart from the dropped keys, every key must map onto exactly one of ours with the same
shape, or a ``ValueError`` names it. ``checkpoint_filter_fn`` is the same mapping as timm's
``pretrained_filter_fn``, so ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``
loads an upstream checkpoint through timm's own pretrained path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn


class Rule(NamedTuple):
    """Rewrite an upstream key prefix matching ``pattern`` into ``target`` (``re`` expand syntax)."""

    pattern: str
    target: str
    #: The upstream module is an ``nn.Linear`` ([out, in]) standing where we use a 1x1 conv.
    from_linear: bool = False


#: Upstream keys both papers' code builds but never calls in forward: the per-block LayerNorms.
UNUSED_BLOCK_NORMS = re.compile(r"block\.\d+\.norm[12]\.(weight|bias)")

#: Where the checkpoint sits inside a training-script dict, in order of preference (timm, others).
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")

#: Every family's classifier is upstream's ``head`` under the same name.
HEAD_RULES = [Rule(r"head\.", "head.")]


def unwrap(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The bare upstream state_dict: out of a training-script wrapper, with DDP's ``module.`` removed."""
    if not any(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(checkpoint.get(key), Mapping)), None)
        if wrapper is None:
            raise ValueError(
                f"no tensors and none of the keys {WRAPPER_KEYS} in the checkpoint "
                f"(top-level keys: {sorted(checkpoint)[:10]})"
            )
        checkpoint = checkpoint[wrapper]
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _rules_for(model: nn.Module) -> list[Rule]:
    key_rules = getattr(model, "upstream_key_rules", None)
    if key_rules is None:
        raise ValueError(f"{type(model).__name__} declares no upstream key mapping (upstream_key_rules)")
    return key_rules()


def _rename(key: str, rules: list[Rule]) -> tuple[str, Rule] | None:
    for rule in rules:
        match = re.match(rule.pattern, key)
        if match:
            return match.expand(rule.target) + key[match.end() :], rule
    return None


def convert_upstream_state_dict(
    model: nn.Module, checkpoint: Mapping[str, object], unchecked: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Translate an upstream checkpoint into ``model``'s key names and shapes, checking every key.

    Keys whose new name is in ``unchecked`` are renamed but neither required nor shape-checked: timm's
    loader drops the classifier itself when the model's ``num_classes`` differs from the checkpoint's.
    """
    rules = _rules_for(model)
    unused = getattr(model, "UPSTREAM_UNUSED", None)
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in unwrap(checkpoint).items():
        if unused is not None and unused.fullmatch(key):
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"upstream key {key!r} holds a {type(value).__name__}, not a tensor")
        renamed = _rename(key, rules)
        if renamed is not None and renamed[0] in unchecked:
            converted[renamed[0]] = value
            continue
        if renamed is None or renamed[0] not in ours:
            where = "no mapping rule" if renamed is None else f"maps to {renamed[0]!r}, which the model lacks"
            raise ValueError(f"unexpected key {key!r} in the upstream checkpoint ({where})")
        name, rule = renamed
        if name in converted:
            raise ValueError(f"upstream keys {source[name]!r} and {key!r} both map to {name!r}")
        expected = ours[name].shape
        if rule.from_linear and value.ndim == 2 and len(expected) > 2:
            value = value.reshape(*value.shape, *(1,) * (len(expected) - 2))
        if value.shape != expected:
            raise ValueError(
                f"shape mismatch for {key!r} -> {name!r}: checkpoint {list(value.shape)}, model {list(expected)}"
            )
        converted[name] = value
        source[name] = key
    missing = [name for name in ours if name not in converted and name not in unchecked]
    if missing:
        raise ValueError(f"missing from the upstream checkpoint ({len(missing)} keys, our names): {missing}")
    return converted


def load_upstream_state_dict(model: nn.Module, state_dict: Mapping[str, object]) -> None:
    """Load weights saved by the upstream code into one of our models, in place and strictly.

    Accepts a raw state_dict, a training checkpoint holding one under ``state_dict`` (or ``model``,
    ``state_dict_ema``), and DDP's ``module.`` prefix. The family's unused upstream keys are dropped.
    """
    model.load_state_dict(convert_upstream_state_dict(model, state_dict), strict=True)


def checkpoint_filter_fn(state_dict: Mapping[str, object], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn``: an upstream checkpoint in our names; one of ours passes through.

    The classifier named by the model's ``pretrained_cfg`` is left for timm's loader, which discards it
    when the model was built with another class count (fine-tuning an ImageNet checkpoint on CIFAR).
    """
    state_dict = unwrap(state_dict)
    if set(state_dict) <= set(model.state_dict()):
        return state_dict
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    unchecked = (f"{classifier}.weight", f"{classifier}.bias") if classifier else ()
    return convert_upstream_state_dict(model, state_dict, unchecked)
