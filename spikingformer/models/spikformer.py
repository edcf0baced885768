"""Spikformer (Zhou et al., ICLR 2023): the post-activation baseline Spikingformer is compared against.

Every Conv/BN is followed by a LIF, so the residual stream carries spike sums (0, 1, 2, ...) and the
q/k/v, MLP and head inputs are not binary: that is what costs Spikformer MACs in the energy table.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from spikingformer.checkpoints.upstream import HEAD_RULES, UNUSED_BLOCK_NORMS, Rule
from spikingformer.energy.conventions import EnergyConvention
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
    IMAGENET_ARGS,
    IMAGENET_CFG,
    create_model_with_cfg,
    pretrained_cfg,
)
from spikingformer.neurons import V_THRESHOLD_ATTN, MultiStepLIF

#: Which of the four SPS conv stages max-pool their output, per input layout.
POOLED_STAGES = {
    "imagenet": (True, True, True, True),  # 224 -> 14
    "cifar": (False, False, True, True),  # 32 -> 8
}


class SPSStage(nn.Module):
    """Conv3x3 -> BN -> LIF [-> MaxPool]."""

    def __init__(self, in_dim: int, out_dim: int, tau: float, pool: bool) -> None:
        super().__init__()
        self.conv_bn = conv_bn_2d(in_dim, out_dim, 3, bias=False)
        self.lif = MultiStepLIF(tau)
        self.pool = SeqMaxPool() if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.lif(self.conv_bn(x)))


class SpikingPatchSplitting(nn.Module):
    """SPS: four conv stages C -> D/8 -> D/4 -> D/2 -> D, then the RPE conv with a spike shortcut."""

    def __init__(self, in_chans: int, embed_dim: int, tau: float, layout: str) -> None:
        super().__init__()
        widths = [in_chans, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        pools = POOLED_STAGES[layout]
        self.stages = nn.Sequential(*(SPSStage(widths[i], widths[i + 1], tau, pools[i]) for i in range(4)))
        self.rpe = conv_bn_2d(embed_dim, embed_dim, 3, bias=False)
        self.rpe_lif = MultiStepLIF(tau)
        self.downsample = 2 ** sum(pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)
        return x + self.rpe_lif(self.rpe(x))


class SpikformerSelfAttention(nn.Module):
    """Q, K, V (1x1 conv, BN, LIF) on the stream -> attention -> LIF(v_th 0.5) -> conv, BN, LIF."""

    #: How the energy accounting costs its spike products (spikingformer.energy: the SSA kind).
    energy_attention = "ssa"

    def __init__(self, dim: int, num_heads: int, tau: float, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v = (conv_bn_1d(dim, dim, bias=qkv_bias) for _ in range(3))
        self.q_lif, self.k_lif, self.v_lif = (MultiStepLIF(tau) for _ in range(3))
        self.attn_lif = MultiStepLIF(tau, V_THRESHOLD_ATTN)
        self.proj = conv_bn_1d(dim, dim, bias=True)
        self.proj_lif = MultiStepLIF(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(3)
        y = spike_attention(self.q_lif(self.q(s)), self.k_lif(self.k(s)), self.v_lif(self.v(s)), self.num_heads)
        return self.project(self.attn_lif(y)).reshape(x.shape)

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """The output projection of the attention spikes ``[T, B, D, N]``: conv, BN, then ``proj_lif`` over T."""
        return self.proj_lif(self.proj(y))


class SpikformerMLP(nn.Module):
    """1x1 conv + BN -> LIF -> 1x1 conv + BN -> LIF."""

    def __init__(self, dim: int, hidden_dim: int, tau: float) -> None:
        super().__init__()
        self.fc1 = conv_bn_2d(dim, hidden_dim, 1, bias=True)
        self.fc1_lif = MultiStepLIF(tau)
        self.fc2 = conv_bn_2d(hidden_dim, dim, 1, bias=True)
        self.fc2_lif = MultiStepLIF(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2_lif(self.fc2(self.fc1_lif(self.fc1(x))))


#: Upstream's SPS names (``patch_embed.proj_conv``, ``proj{i}_bn``, ``rpe_conv``), the same in both layouts.
UPSTREAM_SPS_RULES = [
    Rule(r"patch_embed\.proj_(conv|bn)\.", r"tokenizer.stages.0.conv_bn.\1."),
    Rule(r"patch_embed\.proj_(conv|bn)([123])\.", r"tokenizer.stages.\2.conv_bn.\1."),
    Rule(r"patch_embed\.rpe_(conv|bn)\.", r"tokenizer.rpe.\1."),
]


class Spikformer(SpikingTransformer):
    """Spikformer-L-D. The CIFAR layout's q/k/v projections carry a bias (upstream ``nn.Linear``)."""

    LAYOUTS = tuple(POOLED_STAGES)
    UPSTREAM_UNUSED = UNUSED_BLOCK_NORMS
    #: Its residual stream carries spike sums: the paper's figures count them as MACs (upstream Spikingformer's
    #: spike test, as COMMON); upstream's calculator can instead count integer sums up to 30 as ACs.
    EXTRA_ENERGY = (
        EnergyConvention(
            "spike_counts", max_spike_count=30,
            description="upstream's alternative: integer spike counts up to 30 are ACs weighted by value",
        ),
    )

    def build_tokenizer(self, in_chans: int, embed_dim: int, tau: float, layout: str) -> nn.Module:
        return SpikingPatchSplitting(in_chans, embed_dim, tau, layout)

    def build_block(
        self, dim: int, num_heads: int, mlp_ratio: float, tau: float, drop_path: float, layout: str
    ) -> nn.Module:
        """Post-activation residual block over a stream of spike sums."""
        attn = SpikformerSelfAttention(dim, num_heads, tau, qkv_bias=layout == "cifar")
        block = ResidualBlock(attn, SpikformerMLP(dim, int(dim * mlp_ratio), tau), drop_path)
        if layout == "cifar":  # upstream's nn.Linear projections get the ViT init (trunc normal 0.02, zero bias)
            for module in block.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
        return block

    def upstream_key_rules(self) -> list[Rule]:
        """Upstream key prefixes -> ours; CIFAR's projections are ``nn.Linear`` (``q_linear``), ImageNet's convs."""
        conv = "linear" if self.layout == "cifar" else "conv"
        linear = conv == "linear"
        return [
            *UPSTREAM_SPS_RULES,
            Rule(rf"block\.(\d+)\.attn\.(q|k|v|proj)_{conv}\.", r"blocks.\1.attn.\2.conv.", linear),
            Rule(r"block\.(\d+)\.attn\.(q|k|v|proj)_bn\.", r"blocks.\1.attn.\2.bn."),
            Rule(rf"block\.(\d+)\.mlp\.(fc[12])_{conv}\.", r"blocks.\1.mlp.\2.conv.", linear),
            Rule(r"block\.(\d+)\.mlp\.(fc[12])_bn\.", r"blocks.\1.mlp.\2.bn."),
            *HEAD_RULES,
        ]


def _cfg(data_cfg: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return pretrained_cfg(data_cfg, first_conv="tokenizer.stages.0.conv_bn.conv", paper_ids="arXiv:2209.15425",
                          **kwargs)


default_cfgs = generate_default_cfgs({
    "spikformer_8_384": _cfg(IMAGENET_CFG),
    "spikformer_8_512": _cfg(IMAGENET_CFG),
    "spikformer_8_768": _cfg(IMAGENET_CFG),
    "spikformer_cifar_4_256": _cfg(CIFAR10_CFG),
    "spikformer_cifar_2_384": _cfg(CIFAR10_CFG),
    "spikformer_cifar_4_384": _cfg(CIFAR10_CFG),
})


def _create_spikformer(variant: str, pretrained: bool = False, **kwargs: Any) -> Spikformer:
    return create_model_with_cfg(Spikformer, variant, pretrained, **kwargs)


@register_model
def spikformer_8_384(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-8-384, ImageNet 224x224, T=4."""
    model_args = dict(IMAGENET_ARGS, embed_dim=384)
    return _create_spikformer("spikformer_8_384", pretrained, **dict(model_args, **kwargs))


@register_model
def spikformer_8_512(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-8-512, ImageNet 224x224, T=4."""
    model_args = dict(IMAGENET_ARGS, embed_dim=512)
    return _create_spikformer("spikformer_8_512", pretrained, **dict(model_args, **kwargs))


@register_model
def spikformer_8_768(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-8-768, ImageNet 224x224, T=4."""
    model_args = dict(IMAGENET_ARGS, embed_dim=768)
    return _create_spikformer("spikformer_8_768", pretrained, **dict(model_args, **kwargs))


@register_model
def spikformer_cifar_4_256(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-4-256, CIFAR 32x32, T=4."""
    model_args = dict(CIFAR_ARGS, embed_dim=256, depth=4, num_heads=8)
    return _create_spikformer("spikformer_cifar_4_256", pretrained, **dict(model_args, **kwargs))


@register_model
def spikformer_cifar_2_384(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-2-384, CIFAR 32x32, T=4."""
    model_args = dict(CIFAR_ARGS, embed_dim=384, depth=2, num_heads=12)
    return _create_spikformer("spikformer_cifar_2_384", pretrained, **dict(model_args, **kwargs))


@register_model
def spikformer_cifar_4_384(pretrained: bool = False, **kwargs: Any) -> Spikformer:
    """Spikformer-4-384, CIFAR 32x32, T=4."""
    model_args = dict(CIFAR_ARGS, embed_dim=384, depth=4, num_heads=12)
    return _create_spikformer("spikformer_cifar_4_384", pretrained, **dict(model_args, **kwargs))
