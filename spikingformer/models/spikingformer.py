"""Spikingformer (arXiv 2304.11954): the spike-driven, pre-activation residual transformer.

Each residual branch starts with a LIF and ends with Conv + BN, so the residual stream carries real
values and every Conv/Linear input but the first conv and the head is a binary spike tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from spikingformer.checkpoints.upstream import HEAD_RULES, UNUSED_BLOCK_NORMS, Rule
from spikingformer.models.base import SpikingTransformer
from spikingformer.models.layers import (
    ResidualBlock,
    SeqMaxPool,
    conv_bn_1d,
    conv_bn_2d,
    spike_attention,
)
from spikingformer.models.registry import (
    CIFAR10_CFG,
    CIFAR_ARGS,
    DVS128_CFG,
    DVS_ARGS,
    IMAGENET_ARGS,
    IMAGENET_CFG,
    create_model_with_cfg,
    pretrained_cfg,
)
from spikingformer.neurons import V_THRESHOLD_ATTN, MultiStepLIF

#: Which of the five tokenizer stages max-pool their input, per input layout.
POOLED_STAGES = {
    "imagenet": (False, True, True, True, True),  # 224 -> 14: 196 tokens
    "dvs": (False, True, True, True, True),  # 128 -> 8: 64 tokens
    "cifar": (False, False, False, True, True),  # 32 -> 8: 64 tokens
}


class TokenizerStage(nn.Module):
    """``[LIF -> MaxPool ->] Conv3x3 -> BN``; the first stage sees the analog input and has no LIF."""

    def __init__(self, in_dim: int, out_dim: int, tau: float, spiking: bool, pool: bool) -> None:
        super().__init__()
        self.lif = MultiStepLIF(tau) if spiking else nn.Identity()
        self.pool = SeqMaxPool() if pool else nn.Identity()
        self.conv_bn = conv_bn_2d(in_dim, out_dim, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_bn(self.pool(self.lif(x)))


class SpikingTokenizer(nn.Sequential):
    """Five conv stages C -> D/8 -> D/4 -> D/2 -> D -> D, ending on a BN output (no LIF, no RPE)."""

    def __init__(self, in_chans: int, embed_dim: int, tau: float, layout: str) -> None:
        widths = [in_chans, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim, embed_dim]
        pools = POOLED_STAGES[layout]
        super().__init__(
            *(TokenizerStage(widths[i], widths[i + 1], tau, spiking=i > 0, pool=pools[i]) for i in range(5))
        )
        self.downsample = 2 ** sum(pools)


class SpikingSelfAttention(nn.Module):
    """LIF -> Q, K, V (1x1 conv, BN, LIF) -> softmax-free attention -> LIF(v_th 0.5) -> 1x1 conv + BN."""

    #: How the energy accounting costs its spike products (spikingformer.energy: the SSA kind).
    energy_attention = "ssa"

    def __init__(self, dim: int, num_heads: int, tau: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pre_lif = MultiStepLIF(tau)
        self.q, self.k, self.v = (conv_bn_1d(dim, dim, bias=False) for _ in range(3))
        self.q_lif, self.k_lif, self.v_lif = (MultiStepLIF(tau) for _ in range(3))
        self.attn_lif = MultiStepLIF(tau, V_THRESHOLD_ATTN)
        self.proj = conv_bn_1d(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pre_lif(x.flatten(3))  # [T, B, D, N]
        y = spike_attention(self.q_lif(self.q(s)), self.k_lif(self.k(s)), self.v_lif(self.v(s)), self.num_heads)
        return self.proj(self.attn_lif(y)).reshape(x.shape)


class SpikingMLP(nn.Module):
    """LIF -> 1x1 conv (D -> hidden) + BN -> LIF -> 1x1 conv (hidden -> D) + BN."""

    def __init__(self, dim: int, hidden_dim: int, tau: float) -> None:
        super().__init__()
        self.pre_lif = MultiStepLIF(tau)
        self.fc1 = conv_bn_2d(dim, hidden_dim, 1, bias=True)
        self.hidden_lif = MultiStepLIF(tau)
        self.fc2 = conv_bn_2d(hidden_dim, dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden_lif(self.fc1(self.pre_lif(x))))


#: Upstream's block names (``block.{i}.attn.q_conv``, ``block.{i}.mlp.mlp1_bn``...), the same in every layout.
UPSTREAM_BLOCK_RULES = [
    Rule(r"block\.(\d+)\.attn\.(q|k|v|proj)_(conv|bn)\.", r"blocks.\1.attn.\2.\3."),
    Rule(r"block\.(\d+)\.mlp\.mlp([12])_(conv|bn)\.", r"blocks.\1.mlp.fc\2.\3."),
]


class Spikingformer(SpikingTransformer):
    """Spikingformer-L-D: ``depth`` blocks of width ``embed_dim`` over a spiking conv tokenizer."""

    LAYOUTS = tuple(POOLED_STAGES)
    UPSTREAM_UNUSED = UNUSED_BLOCK_NORMS

    def build_tokenizer(self, in_chans: int, embed_dim: int, tau: float, layout: str) -> nn.Module:
        return SpikingTokenizer(in_chans, embed_dim, tau, layout)

    def build_block(
        self, dim: int, num_heads: int, mlp_ratio: float, tau: float, drop_path: float, layout: str
    ) -> nn.Module:
        """Spike-driven residual block: both branches start with a LIF, the stream stays real-valued."""
        attn = SpikingSelfAttention(dim, num_heads, tau)
        return ResidualBlock(attn, SpikingMLP(dim, int(dim * mlp_ratio), tau), drop_path)

    def upstream_key_rules(self) -> list[Rule]:
        """Upstream key prefixes -> ours; the CIFAR tokenizer is ``block{i}_*``, the others ``proj_*, proj{i}_*``."""
        if self.layout == "cifar":
            tokenizer = [Rule(r"patch_embed\.block([0-4])_(conv|bn)\.", r"tokenizer.\1.conv_bn.\2.")]
        else:
            tokenizer = [
                Rule(r"patch_embed\.proj_(conv|bn)\.", r"tokenizer.0.conv_bn.\1."),
                Rule(r"patch_embed\.proj([1-4])_(conv|bn)\.", r"tokenizer.\1.conv_bn.\2."),
            ]
        return [*tokenizer, *UPSTREAM_BLOCK_RULES, *HEAD_RULES]


def _cfg(data_cfg: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return pretrained_cfg(data_cfg, first_conv="tokenizer.0.conv_bn.conv", paper_ids="arXiv:2304.11954", **kwargs)


default_cfgs = generate_default_cfgs({
    "spikingformer_8_384": _cfg(IMAGENET_CFG),
    "spikingformer_8_512": _cfg(IMAGENET_CFG),
    "spikingformer_8_768": _cfg(IMAGENET_CFG),
    "spikingformer_cifar_4_256": _cfg(CIFAR10_CFG),
    "spikingformer_cifar_2_384": _cfg(CIFAR10_CFG),
    "spikingformer_cifar_4_384": _cfg(CIFAR10_CFG),
    "spikingformer_dvs_2_256": _cfg(DVS128_CFG),
})


def _create_spikingformer(variant: str, pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    return create_model_with_cfg(Spikingformer, variant, pretrained, **kwargs)


@register_model
def spikingformer_8_384(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-8-384, ImageNet 224x224, T=4."""
    model_args = dict(IMAGENET_ARGS, embed_dim=384)
    return _create_spikingformer("spikingformer_8_384", pretrained, **dict(model_args, **kwargs))


@register_model
def spikingformer_8_512(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-8-512, ImageNet 224x224, T=4."""
    model_args = dict(IMAGENET_ARGS, embed_dim=512)
    return _create_spikingformer("spikingformer_8_512", pretrained, **dict(model_args, **kwargs))


@register_model
def spikingformer_8_768(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-8-768, ImageNet 224x224, T=4."""
    model_args = dict(IMAGENET_ARGS, embed_dim=768)
    return _create_spikingformer("spikingformer_8_768", pretrained, **dict(model_args, **kwargs))


@register_model
def spikingformer_cifar_4_256(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-4-256, CIFAR 32x32, T=4."""
    model_args = dict(CIFAR_ARGS, embed_dim=256, depth=4, num_heads=8)
    return _create_spikingformer("spikingformer_cifar_4_256", pretrained, **dict(model_args, **kwargs))


@register_model
def spikingformer_cifar_2_384(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-2-384, CIFAR 32x32, T=4."""
    model_args = dict(CIFAR_ARGS, embed_dim=384, depth=2, num_heads=12)
    return _create_spikingformer("spikingformer_cifar_2_384", pretrained, **dict(model_args, **kwargs))


@register_model
def spikingformer_cifar_4_384(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-4-384, CIFAR 32x32, T=4."""
    model_args = dict(CIFAR_ARGS, embed_dim=384, depth=4, num_heads=12)
    return _create_spikingformer("spikingformer_cifar_4_384", pretrained, **dict(model_args, **kwargs))


@register_model
def spikingformer_dvs_2_256(pretrained: bool = False, **kwargs: Any) -> Spikingformer:
    """Spikingformer-2-256, DVS128 Gesture event frames 16 x 2 x 128 x 128 (T=16, tau 1.5)."""
    model_args = dict(DVS_ARGS, embed_dim=256, depth=2)
    return _create_spikingformer("spikingformer_dvs_2_256", pretrained, **dict(model_args, **kwargs))
