"""Import of checkpoints written by the upstream Spikingformer and Spikformer code.

Upstream names its modules per file (``patch_embed.proj1_conv``, ``block.0.mlp.mlp1_bn``, Spikformer
CIFAR's ``q_linear``...), so each (family, layout) gets a small table of regex rules that rewrite an
upstream key prefix into ours. Loading is strict: apart from the LayerNorms upstream builds but never
uses, every key must map onto exactly one of ours with the same shape, or a ``ValueError`` names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from spikingformer.models.base import SpikingTransformer
from spikingformer.models.spikformer import Spikformer
from spikingformer.models.spikingformer import Spikingformer


class Rule(NamedTuple):
    """Rewrite an upstream key prefix matching ``pattern`` into ``target`` (``re`` expand syntax)."""

    pattern: str
    target: str
    #: The upstream module is an ``nn.Linear`` ([out, in]) standing where we use a 1x1 conv.
    from_linear: bool = False


#: Upstream keys that are dropped: the per-block LayerNorms, built but never called in forward.
UNUSED = re.compile(r"block\.\d+\.norm[12]\.(weight|bias)")

#: Where the checkpoint sits inside a training-script dict, in order of preference (timm, others).
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")

HEAD = [Rule(r"head\.", "head.")]

SPIKINGFORMER_BLOCKS = [
    Rule(r"block\.(\d+)\.attn\.(q|k|v|proj)_(conv|bn)\.", r"blocks.\1.attn.\2.\3."),
    Rule(r"block\.(\d+)\.mlp\.mlp([12])_(conv|bn)\.", r"blocks.\1.mlp.fc\2.\3."),
]

SPIKFORMER_SPS = [
    Rule(r"patch_embed\.proj_(conv|bn)\.", r"tokenizer.stages.0.conv_bn.\1."),
    Rule(r"patch_embed\.proj_(conv|bn)([123])\.", r"tokenizer.stages.\2.conv_bn.\1."),
    Rule(r"patch_embed\.rpe_(conv|bn)\.", r"tokenizer.rpe.\1."),
]


def _spikformer_blocks(conv: str) -> list[Rule]:
    """Spikformer block rules; ``conv`` is upstream's projection module suffix ("conv" or "linear")."""
    linear = conv == "linear"
    return [
        Rule(rf"block\.(\d+)\.attn\.(q|k|v|proj)_{conv}\.", r"blocks.\1.attn.\2.conv.", linear),
        Rule(r"block\.(\d+)\.attn\.(q|k|v|proj)_bn\.", r"blocks.\1.attn.\2.bn."),
        Rule(rf"block\.(\d+)\.mlp\.(fc[12])_{conv}\.", r"blocks.\1.mlp.\2.conv.", linear),
        Rule(r"block\.(\d+)\.mlp\.(fc[12])_bn\.", r"blocks.\1.mlp.\2.bn."),
    ]


#: (family, layout) -> rules. The CIFAR Spikingformer tokenizer is ``block{i}_*``, the others ``proj{i}_*``.
RULES: dict[tuple[type[SpikingTransformer], str], list[Rule]] = {
    (Spikingformer, "cifar"): [
        Rule(r"patch_embed\.block([0-4])_(conv|bn)\.", r"tokenizer.\1.conv_bn.\2."),
        *SPIKINGFORMER_BLOCKS,
        *HEAD,
    ],
    **{
        (Spikingformer, layout): [
            Rule(r"patch_embed\.proj_(conv|bn)\.", r"tokenizer.0.conv_bn.\1."),
            Rule(r"patch_embed\.proj([1-4])_(conv|bn)\.", r"tokenizer.\1.conv_bn.\2."),
            *SPIKINGFORMER_BLOCKS,
            *HEAD,
        ]
        for layout in ("imagenet", "dvs")
    },
    (Spikformer, "cifar"): [*SPIKFORMER_SPS, *_spikformer_blocks("linear"), *HEAD],
    (Spikformer, "imagenet"): [*SPIKFORMER_SPS, *_spikformer_blocks("conv"), *HEAD],
}


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
    for (family, layout), rules in RULES.items():
        if isinstance(model, family) and getattr(model, "layout", None) == layout:
            return rules
    raise ValueError(
        f"no upstream key mapping for {type(model).__name__} (layout {getattr(model, 'layout', None)!r}); "
        f"known: {[(family.__name__, layout) for family, layout in RULES]}"
    )


def _rename(key: str, rules: list[Rule]) -> tuple[str, Rule] | None:
    for rule in rules:
        match = re.match(rule.pattern, key)
        if match:
            return match.expand(rule.target) + key[match.end() :], rule
    return None


def convert_upstream_state_dict(model: nn.Module, checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Translate an upstream checkpoint into ``model``'s key names and shapes, checking every key."""
    rules = _rules_for(model)
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, value in unwrap(checkpoint).items():
        if UNUSED.fullmatch(key):
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"upstream key {key!r} holds a {type(value).__name__}, not a tensor")
        renamed = _rename(key, rules)
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
    missing = [name for name in ours if name not in converted]
    if missing:
        raise ValueError(f"missing from the upstream checkpoint ({len(missing)} keys, our names): {missing}")
    return converted


def load_upstream_state_dict(model: nn.Module, state_dict: Mapping[str, object]) -> None:
    """Load weights saved by the upstream code into one of our models, in place and strictly.

    Accepts a raw state_dict, a training checkpoint holding one under ``state_dict`` (or ``model``,
    ``state_dict_ema``), and DDP's ``module.`` prefix. The unused upstream LayerNorms are dropped.
    """
    model.load_state_dict(convert_upstream_state_dict(model, state_dict), strict=True)
