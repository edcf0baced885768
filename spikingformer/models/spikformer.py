"""Spikformer (Zhou et al., ICLR 2023): the post-activation baseline Spikingformer is compared against.

Every Conv/BN is followed by a LIF, so the residual stream carries spike sums (0, 1, 2, ...) and the
q/k/v, MLP and head inputs are not binary: that is what costs Spikformer MACs in the energy table.
"""

from __future__ import annotations

import torch
from torch import nn

from spikingformer.models.base import SpikingTransformer
from spikingformer.models.layers import (
    ResidualBlock,
    SeqMaxPool,
    conv_bn_1d,
    conv_bn_2d,
    spike_attention,
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
        return self.proj_lif(self.proj(self.attn_lif(y))).reshape(x.shape)


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


class Spikformer(SpikingTransformer):
    """Spikformer-L-D. The CIFAR layout's q/k/v projections carry a bias (upstream ``nn.Linear``)."""

    LAYOUTS = tuple(POOLED_STAGES)

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
