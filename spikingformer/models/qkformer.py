"""QKFormer (Zhou et al., NeurIPS 2024): a hierarchical spiking transformer with token Q-K attention.

Three stages at D/4, D/2 and D channels (DVS: two, at D/2 and D). A spiking conv stem with a spike
shortcut (SPEDS) tokenizes; each later stage opens with a downsampling conv stage that also has a spike
shortcut. The early stages use Q-K token attention (a per-head token mask from the summed Q spikes,
applied to K: linear in the number of tokens), the last stage Spikformer's self-attention. Every branch
ends in a LIF, so the residual stream and both shortcut sums carry integer spike counts.

The last stage's self-attention is upstream's exactly: its ``proj_lif`` steps along the time axis folded into the
batch (``T*B``), so a sample's output depends on the other samples of its batch (``batch_coupled_proj_lif``;
``False`` gives the per-sample neuron, which upstream does not compute).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import register_notrace_function
from timm.models import generate_default_cfgs, register_model
from torch import nn

from spikingformer.checkpoints.upstream import HEAD_RULES, Rule
from spikingformer.energy.conventions import EnergyConvention
from spikingformer.energy.report import AttentionShape, register_attention_cost
from spikingformer.models.base import SpikingTransformer
from spikingformer.models.layers import ResidualBlock, SeqConvBN, SeqMaxPool, conv_bn_1d, drop_path_rates
from spikingformer.models.registry import (
    CIFAR10_CFG,
    DVS128_CFG,
    IMAGENET_CFG,
    create_model_with_cfg,
    pretrained_cfg,
)
from spikingformer.models.spikformer import SpikformerMLP, SpikformerSelfAttention
from spikingformer.neurons import V_THRESHOLD_ATTN, MultiStepLIF


@dataclass(frozen=True)
class Layout:
    """One dataset variant's layout; widths are fractions of the embedding D."""

    #: Width of each stem conv unit as (first stage width) / divisor, and whether it max-pools.
    stem_divisors: tuple[int, ...]
    stem_pools: tuple[bool, ...]
    #: The stem's shortcut branches off the input of this unit.
    stem_tap: int
    #: A downsampling stage pools after its first conv (ImageNet) or its second (CIFAR, DVS).
    pool_first: bool
    #: Width of each stage as D / divisor (the last is D).
    stage_divisors: tuple[int, ...]
    #: Q-K token-attention blocks in each stage but the last; the last holds the remaining
    #: ``depth - sum(token_blocks)`` self-attention blocks.
    token_blocks: tuple[int, ...]

    @property
    def downsample(self) -> int:
        """Input side / final token-grid side."""
        return 2 ** (sum(self.stem_pools) + len(self.stage_divisors) - 1)


LAYOUTS = {
    # 224 -> 56 (stem) -> 28 -> 14; stages at D/4, D/2, D with 1 + 2 + (depth - 3) blocks
    "imagenet": Layout((2, 1, 1), (True, True, False), 1, True, (4, 2, 1), (1, 2)),
    # 32 -> 32 -> 16 -> 8; stages at D/4, D/2, D with 1 + 1 + (depth - 2) blocks
    "cifar": Layout((2, 1), (False, False), 1, False, (4, 2, 1), (1, 1)),
    # 128 -> 16 -> 8; stages at D/2, D with 1 + (depth - 1) blocks
    "dvs": Layout((8, 4, 2, 1), (False, True, True, True), 2, False, (2, 1), (1,)),
}


class ConvUnit(nn.Module):
    """Conv (no bias) -> BN [-> MaxPool 3x3/2] -> LIF on ``[T, B, C, H, W]``."""

    def __init__(
        self, in_dim: int, out_dim: int, tau: float, *, kernel_size: int = 3, stride: int = 1, pool: bool = False
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.conv_bn = SeqConvBN(conv, nn.BatchNorm2d(out_dim))
        self.pool = SeqMaxPool() if pool else nn.Identity()
        self.lif = MultiStepLIF(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lif(self.pool(self.conv_bn(x)))


class ShortcutConvStage(nn.Module):
    """Conv units ``widths[0] -> widths[1] -> ...`` plus a 1x1 strided conv shortcut: a sum of two spike maps.

    The shortcut branches off the input of unit ``tap`` and strides by the pooling of the units it skips,
    so both branches end on the same grid. Used for the stem (SPEDS) and every downsampling stage.
    """

    def __init__(self, widths: list[int], pools: tuple[bool, ...], tap: int, tau: float) -> None:
        super().__init__()
        self.units = nn.ModuleList(ConvUnit(widths[i], widths[i + 1], tau, pool=pool) for i, pool in enumerate(pools))
        self.tap = tap
        stride = 2 ** sum(pools[tap:])
        self.shortcut = ConvUnit(widths[tap], widths[-1], tau, kernel_size=1, stride=stride)
        self.downsample = 2 ** sum(pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = x
        for i, unit in enumerate(self.units):
            if i == self.tap:
                branch = x
            x = unit(x)
        return x + self.shortcut(branch)


class TokenQKAttentionCost:
    """Q-K token attention's spike operations, linear in the tokens N: ``T * N * D`` dense ops for each of
    the per-head sum of Q over its channels and the masking of K. The sum accumulates Q's spikes (ACs at
    Q's rate), the masking passes K's spikes (ACs at K's rate); the mask LIF's own count is not an op.
    """

    def dense_ops(self, shape: AttentionShape) -> float:
        return 2.0 * shape.time_steps * shape.heads * shape.tokens * shape.head_dim

    def ac_ops(self, shape: AttentionShape, rate_q: float, rate_k: float, rate_v: float | None) -> float:
        return self.dense_ops(shape) / 2 * (rate_q + rate_k)


register_attention_cost("qk_token", TokenQKAttentionCost())


class TokenQKAttention(nn.Module):
    """Q, K (1x1 conv, BN, LIF) -> per-head token mask LIF(sum of Q over the head's channels) applied to K.

    The mask LIF has threshold 0.5, so a token is kept in a head when any of its Q channels fired; there is
    no V and no scale, and the cost is linear in the number of tokens. Then 1x1 conv (bias), BN, LIF.
    """

    #: How the energy accounting costs its spike products (:class:`TokenQKAttentionCost`).
    energy_attention = "qk_token"

    def __init__(self, dim: int, num_heads: int, tau: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k = (conv_bn_1d(dim, dim, bias=False) for _ in range(2))
        self.q_lif, self.k_lif = (MultiStepLIF(tau) for _ in range(2))
        self.attn_lif = MultiStepLIF(tau, V_THRESHOLD_ATTN)
        self.proj = conv_bn_1d(dim, dim, bias=True)
        self.proj_lif = MultiStepLIF(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(3)  # [T, B, D, N]
        q, k = self.q_lif(self.q(s)), self.k_lif(self.k(s))
        mask = self.attn_lif(head_sums(q, self.num_heads))  # [T, B, h, 1, N]
        return self.proj_lif(self.proj(mask_tokens(mask, k))).reshape(x.shape)


@register_notrace_function
def head_sums(q: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[T, B, D, N]`` spikes -> their sum over each head's channels, ``[T, B, h, 1, N]``.

    Channel ``c`` belongs to head ``c // (D / h)``, as upstream's reshape assigns it.
    """
    t, b, d, n = q.shape
    return q.reshape(t, b, num_heads, d // num_heads, n).sum(3, keepdim=True)


@register_notrace_function
def mask_tokens(mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """K ``[T, B, D, N]`` with each head's tokens kept where its mask ``[T, B, h, 1, N]`` fired."""
    t, b, heads, _, n = mask.shape
    return (mask * k.reshape(t, b, heads, -1, n)).reshape(k.shape)


#: The label of what couples a QKFormer sample to the rest of its batch (``QKFormer.batch_coupling``).
PROJ_LIF_OVER_TB = "last-stage proj_lif steps over T*B, as upstream"


class BatchCoupledSelfAttention(SpikformerSelfAttention):
    """Spikformer's self-attention as QKFormer's last stage runs it: ``proj_lif`` steps along ``T*B``.

    Upstream's ``Spiking_Self_Attention`` (every QKFormer model file) flattens ``[T, B, D, N]`` to ``[T*B, D, N]``
    before its multi-step ``proj_lif``, which takes the leading axis for time: it steps t0b0, t0b1, ..., t1b0, ...,
    so sample b's membrane at step t starts from sample b-1's (from the batch's last sample at step t-1). The
    published figures were trained and evaluated that way; with one sample per batch both neurons agree.
    """

    def project(self, y: torch.Tensor) -> torch.Tensor:
        return self.proj_lif(self.proj(y).flatten(0, 1)).unflatten(0, y.shape[:2])


class QKFormer(SpikingTransformer):
    """HST-L-D: SPEDS stem, Q-K token-attention stages, then a Spikformer self-attention stage.

    ``blocks`` holds the stages; each after the first opens with its downsampling conv stage
    (``blocks.{stage}.downsample``), then its residual blocks (``blocks.{stage}.{i}``). ``num_heads`` and
    ``mlp_ratio`` apply to every stage, as in the upstream code. ``batch_coupled_proj_lif`` (the default: upstream's
    computation) makes the last stage's ``proj_lif`` step over ``T*B`` (:class:`BatchCoupledSelfAttention`).
    """

    LAYOUTS = tuple(LAYOUTS)
    #: The paper's appendix 6.6 (arXiv 2403.16552): E = E_MAC x FLOPs(first conv) + E_AC x all other SOPs, with
    #: SOP = rate x T x FLOPs. The first conv appears without T, and the convs reading the integer spike counts of
    #: the residual stream and shortcut sums are SOPs, i.e. ACs weighted by the mean value. The stream can hold at
    #: most 2 + 2 x (blocks in a stage) (16 in HST-10), so a bound of 30 admits every count it can carry. Not
    #: stated there: how the Q-K token attention's sums and masks are counted (T*N*D each at Q's and K's rates
    #: here) and the head (a MAC here: it reads averaged counts). The paper's 15.13 / 21.99 / 38.91 mJ need the
    #: trained models' firing rates; upstream has no energy script and its checkpoints were withdrawn.
    PAPER_ENERGY = EnergyConvention(
        "paper",
        max_spike_count=30,
        first_layer_once=True,
        description="QKFormer's appendix: the first conv's MACs once per image (no T), integer spike counts "
        "as ACs weighted by value (up to 30); the paper's 15.13 / 21.99 / 38.91 mJ are NOT recomputable here "
        "(they need the trained weights' firing rates: no energy script upstream, checkpoints withdrawn)",
    )

    def __init__(
        self,
        *,
        layout: str = "cifar",
        embed_dim: int = 384,
        depth: int = 4,
        num_heads: int = 8,
        img_size: int = 32,
        batch_coupled_proj_lif: bool = True,
        **kwargs: Any,
    ) -> None:
        if layout in LAYOUTS:
            check_stages(LAYOUTS[layout], embed_dim, depth, num_heads, img_size)
        self.batch_coupled_proj_lif = batch_coupled_proj_lif  # read by build_blocks, which super().__init__ calls
        super().__init__(
            layout=layout, embed_dim=embed_dim, depth=depth, num_heads=num_heads, img_size=img_size, **kwargs
        )
        #: timm's taps: the stem, then each stage at its own width and stride.
        stem = self.tokenizer.downsample
        self.feature_info = [
            dict(num_chs=self.tokenizer.shortcut.conv_bn.conv.out_channels, reduction=stem, module="tokenizer"),
            *(
                dict(num_chs=embed_dim // divisor, reduction=stem * 2**s, module=f"blocks.{s}")
                for s, divisor in enumerate(LAYOUTS[layout].stage_divisors)
            ),
        ]

    @classmethod
    def batch_coupling(cls, kwargs: Mapping[str, Any]) -> str | None:
        """The last stage's ``proj_lif`` over ``T*B``, unless built with ``batch_coupled_proj_lif=False``."""
        return PROJ_LIF_OVER_TB if kwargs.get("batch_coupled_proj_lif", True) else None

    def build_tokenizer(self, in_chans: int, embed_dim: int, tau: float, layout: str) -> nn.Module:
        spec = LAYOUTS[layout]
        width = embed_dim // spec.stage_divisors[0]
        widths = [in_chans, *(width // divisor for divisor in spec.stem_divisors)]
        return ShortcutConvStage(widths, spec.stem_pools, spec.stem_tap, tau)

    def build_blocks(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        tau: float,
        drop_path_rate: float,
        layout: str,
    ) -> nn.ModuleList:
        """The stages: Q-K attention blocks at D/4 and D/2 (DVS: D/2), self-attention blocks at D."""
        spec = LAYOUTS[layout]
        counts = [*spec.token_blocks, depth - sum(spec.token_blocks)]
        rates = iter(drop_path_rates(drop_path_rate, depth))
        pools = (True, False) if spec.pool_first else (False, True)
        stages = nn.ModuleList()
        for s, (divisor, count) in enumerate(zip(spec.stage_divisors, counts, strict=True)):
            dim = embed_dim // divisor
            stage = nn.Sequential()
            if s > 0:
                stage.add_module("downsample", ShortcutConvStage([dim // 2, dim, dim], pools, 0, tau))
            last = s == len(counts) - 1
            self_attention = BatchCoupledSelfAttention if self.batch_coupled_proj_lif else SpikformerSelfAttention
            for i in range(count):
                attn = (
                    self_attention(dim, num_heads, tau, qkv_bias=False)
                    if last
                    else TokenQKAttention(dim, num_heads, tau)
                )
                stage.add_module(
                    str(i), ResidualBlock(attn, SpikformerMLP(dim, int(dim * mlp_ratio), tau), next(rates))
                )
            stages.append(stage)
        return stages

    @property
    def depth(self) -> int:
        return sum(isinstance(m, ResidualBlock) for m in self.blocks.modules())

    def upstream_unused_params(self) -> int:
        """Upstream builds nothing it does not call (``qkv_mp`` has no parameters): its count is ours."""
        return 0

    def upstream_key_rules(self) -> list[Rule]:
        """Upstream's ``patch_embed{n}`` / ``stage{n}`` names -> ours (``tokenizer``, ``blocks.{n-1}``).

        The names differ per upstream file, so a checkpoint of another layout is refused: ImageNet's MLP
        is ``fc{1,2}`` and its last-stage attention ``attn``, CIFAR's and DVS's ``mlp{1,2}`` and ``ssa``; a
        downsampling stage's first conv is ``proj3`` (``proj`` in the DVS file), its second ``proj4``.
        """
        imagenet = self.layout == "imagenet"
        mlp, ssa = ("fc", "attn") if imagenet else ("mlp", "ssa")
        first = "proj" if self.layout == "dvs" else "proj3"
        rules = [
            Rule(r"patch_embed1\.proj_(conv|bn)\.", r"tokenizer.units.0.conv_bn.\1."),
            Rule(r"patch_embed1\.proj([1-3])_(conv|bn)\.", r"tokenizer.units.\1.conv_bn.\2."),
            Rule(r"patch_embed1\.proj_res_(conv|bn)\.", r"tokenizer.shortcut.conv_bn.\1."),
        ]
        for n in range(1, len(self.blocks) + 1):
            stage = f"blocks.{n - 1}"
            attn = ssa if n == len(self.blocks) else "tssa"
            if n > 1:
                rules += [
                    Rule(rf"patch_embed{n}\.{first}_(conv|bn)\.", rf"{stage}.downsample.units.0.conv_bn.\1."),
                    Rule(rf"patch_embed{n}\.proj4_(conv|bn)\.", rf"{stage}.downsample.units.1.conv_bn.\1."),
                    Rule(rf"patch_embed{n}\.proj_res_(conv|bn)\.", rf"{stage}.downsample.shortcut.conv_bn.\1."),
                ]
            rules += [
                Rule(rf"stage{n}\.(\d+)\.{attn}\.(q|k|v|proj)_(conv|bn)\.", rf"{stage}.\1.attn.\2.\3."),
                Rule(rf"stage{n}\.(\d+)\.mlp\.{mlp}([12])_(conv|bn)\.", rf"{stage}.\1.mlp.fc\2.\3."),
            ]
        return [*rules, *HEAD_RULES]


def check_stages(spec: Layout, embed_dim: int, depth: int, num_heads: int, img_size: int) -> None:
    """Fail at construction, naming the value, on a width, depth or input size the stages cannot take."""
    narrowest = spec.stage_divisors[0] * max(spec.stem_divisors)
    if embed_dim <= 0 or embed_dim % narrowest:
        raise ValueError(
            f"embed_dim={embed_dim} must be a positive multiple of {narrowest}: the narrowest "
            f"stem conv is D/{narrowest}"
        )
    for divisor in spec.stage_divisors:
        if num_heads <= 0 or (embed_dim // divisor) % num_heads:
            raise ValueError(
                f"the D/{divisor} = {embed_dim // divisor} channel stage is not divisible by num_heads={num_heads}"
            )
    if depth <= sum(spec.token_blocks):
        raise ValueError(
            f"depth={depth} must exceed the {sum(spec.token_blocks)} Q-K attention blocks, "
            "leaving at least one self-attention block"
        )
    if img_size % spec.downsample:
        raise ValueError(f"img_size={img_size} must be divisible by {spec.downsample} (the stages' downsampling)")


def _cfg(data_cfg: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return pretrained_cfg(data_cfg, first_conv="tokenizer.units.0.conv_bn.conv", paper_ids="arXiv:2403.16552", **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "qkformer_10_384": _cfg(IMAGENET_CFG),
        "qkformer_10_512": _cfg(IMAGENET_CFG),
        "qkformer_10_768": _cfg(IMAGENET_CFG),
        "qkformer_cifar_4_384": _cfg(CIFAR10_CFG),
        "qkformer_cifar10dvs_2_256": _cfg(DVS128_CFG, num_classes=10),
        "qkformer_dvs_2_256": _cfg(DVS128_CFG),
    }
)

IMAGENET_ARGS: dict[str, Any] = dict(layout="imagenet", img_size=224, in_chans=3, num_classes=1000, depth=10, T=4)
#: Upstream's CIFAR files hard-code 8 heads in every stage.
CIFAR_ARGS: dict[str, Any] = dict(
    layout="cifar", img_size=32, in_chans=3, num_classes=10, embed_dim=384, depth=4, num_heads=8, T=4
)
#: Upstream's DVS files hard-code 16 heads and use tau 2.0 (Spikingformer's DVS model uses 1.5).
DVS_ARGS: dict[str, Any] = dict(
    layout="dvs", img_size=128, in_chans=2, embed_dim=256, depth=2, num_heads=16, T=16, tau=2.0
)


def _create_qkformer(variant: str, pretrained: bool, **kwargs: Any) -> QKFormer:
    return create_model_with_cfg(QKFormer, variant, pretrained, **kwargs)


@register_model
def qkformer_10_384(pretrained: bool = False, **kwargs: Any) -> QKFormer:
    """HST-10-384 (``QKFormer_10_384``), ImageNet 224x224, T=4, 6 heads: 16,473,688 parameters."""
    model_args = dict(IMAGENET_ARGS, embed_dim=384, num_heads=6)
    return _create_qkformer("qkformer_10_384", pretrained, **dict(model_args, **kwargs))


@register_model
def qkformer_10_512(pretrained: bool = False, **kwargs: Any) -> QKFormer:
    """HST-10-512 (``QKFormer_10_512``), ImageNet 224x224, T=4, 8 heads: 29,079,336 parameters."""
    model_args = dict(IMAGENET_ARGS, embed_dim=512, num_heads=8)
    return _create_qkformer("qkformer_10_512", pretrained, **dict(model_args, **kwargs))


@register_model
def qkformer_10_768(pretrained: bool = False, **kwargs: Any) -> QKFormer:
    """HST-10-768 (``QKFormer_10_768``), ImageNet 224x224, T=4, 12 heads: 64,962,760 parameters."""
    model_args = dict(IMAGENET_ARGS, embed_dim=768, num_heads=12)
    return _create_qkformer("qkformer_10_768", pretrained, **dict(model_args, **kwargs))


@register_model
def qkformer_cifar_4_384(pretrained: bool = False, **kwargs: Any) -> QKFormer:
    """HST-4-384, CIFAR 32x32, T=4: 6,706,234 parameters; ``num_classes=100`` for CIFAR-100 (6,740,884)."""
    return _create_qkformer("qkformer_cifar_4_384", pretrained, **dict(CIFAR_ARGS, **kwargs))


@register_model
def qkformer_cifar10dvs_2_256(pretrained: bool = False, **kwargs: Any) -> QKFormer:
    """HST-2-256, CIFAR10-DVS event frames 16 x 2 x 128 x 128, MLP ratio 1: 1,504,138 parameters."""
    model_args = dict(DVS_ARGS, num_classes=10, mlp_ratio=1.0)
    return _create_qkformer("qkformer_cifar10dvs_2_256", pretrained, **dict(model_args, **kwargs))


@register_model
def qkformer_dvs_2_256(pretrained: bool = False, **kwargs: Any) -> QKFormer:
    """HST-2-256, DVS128 Gesture event frames 16 x 2 x 128 x 128, MLP ratio 4 as ``dvs128-gesture/model.py``
    trains it: 1,999,371 parameters (the paper's 1.50M is the MLP-ratio-1 CIFAR10-DVS model)."""
    model_args = dict(DVS_ARGS, num_classes=11, mlp_ratio=4.0)
    return _create_qkformer("qkformer_dvs_2_256", pretrained, **dict(model_args, **kwargs))
