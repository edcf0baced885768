"""An independent transcription of the upstream Spike-driven Transformer v1 network (test helper).

Written from PEERS.md (a) with upstream's module names (``patch_embed.proj_conv1``, ``block.0.attn.q_bn``,
``block.0.attn.talking_heads``...), so its ``state_dict()`` has the keys of an upstream checkpoint, including
the ``talking_heads`` Conv1d that upstream builds and never calls. Its forward follows upstream's layout:
Q, K, V split into heads as ``[T, B, h, N, d]``, every Conv/BN on the time axis folded into the batch, and the
DVS ``Erode`` as the ``MaxPool3d((1, 3, 3))`` upstream applies to 5-D tensors. The equivalence tests load its
weights into our ``SpikeDrivenTransformer`` through ``load_upstream_state_dict``.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn


def lif(v_threshold: float = 1.0) -> neuron.LIFNode:
    """``MultiStepLIFNode(tau=2.0, detach_reset=True)``: SDT uses tau 2 everywhere, DVS included."""
    return neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m", v_threshold=v_threshold)


def fold(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 4-D module to a ``[T, B, ...]`` tensor with time folded into the batch."""
    T, B = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:])


class MS_SPS(nn.Module):
    """conv-BN-LIF[-MP] x3, conv-BN[-MP] (x_feat), then LIF -> rpe conv -> BN, plus x_feat."""

    def __init__(self, in_channels: int, embed_dims: int, pooling_stat: str):
        super().__init__()
        widths = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        self.pooling_stat = pooling_stat
        self.suffixes = ["", "1", "2", "3"]
        for i, s in enumerate(self.suffixes):
            setattr(self, f"proj_conv{s}", nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{s}", nn.BatchNorm2d(widths[i + 1]))
            setattr(self, f"proj_lif{s}", lif())
            setattr(self, f"maxpool{s}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.rpe_conv = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, s in enumerate(self.suffixes):
            x = fold(getattr(self, f"proj_bn{s}"), fold(getattr(self, f"proj_conv{s}"), x))
            if i < 3:
                x = getattr(self, f"proj_lif{s}")(x)
            if self.pooling_stat[i] == "1":
                x = fold(getattr(self, f"maxpool{s}"), x)
        x_feat = x
        x = self.proj_lif3(x)
        return fold(self.rpe_bn, fold(self.rpe_conv, x)) + x_feat


class Erode(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 1, 1), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)  # a 5-D input is read as (N, C, D, H, W): the max runs over the last two axes


class MS_SSA_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int, dvs: bool):
        super().__init__()
        self.num_heads, self.dvs = num_heads, dvs
        if dvs:
            self.pool = Erode()
        self.shortcut_lif = lif()
        for name in "qkv":
            setattr(self, f"{name}_conv", nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(dim))
            setattr(self, f"{name}_lif", lif())
        self.attn_lif = lif(0.5)  # built, never called
        self.talking_heads = nn.Conv1d(num_heads, num_heads, kernel_size=1, stride=1, bias=False)  # never called
        self.talking_heads_lif = lif(0.5)
        self.proj_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm2d(dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W]`` -> ``[T, B, h, N, C/h]``."""
        T, B, C, H, W = x.shape
        return x.flatten(3).transpose(-1, -2).reshape(T, B, H * W, self.num_heads, C // self.num_heads).permute(
            0, 1, 3, 2, 4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        identity = x
        x = self.shortcut_lif(x)
        q = self.q_lif(fold(self.q_bn, fold(self.q_conv, x)))
        k = self.k_lif(fold(self.k_bn, fold(self.k_conv, x)))
        v = self.v_lif(fold(self.v_bn, fold(self.v_conv, x)))
        if self.dvs:
            k, v = self.pool(k), self.pool(v)
        q, k, v = self.heads(q), self.heads(k), self.heads(v)
        kv = k.mul(v)
        if self.dvs:
            kv = self.pool(kv)
        kv = self.talking_heads_lif(kv.sum(dim=-2, keepdim=True))
        x = q.mul(kv)
        if self.dvs:
            x = self.pool(x)
        x = x.transpose(3, 4).reshape(T, B, C, H, W)
        return fold(self.proj_bn, fold(self.proj_conv, x)) + identity


class MS_MLP_Conv(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_lif = lif()
        self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden)
        self.fc2_lif = lif()
        self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = fold(self.fc1_bn, fold(self.fc1_conv, self.fc1_lif(x)))
        return fold(self.fc2_bn, fold(self.fc2_conv, self.fc2_lif(y))) + x


class MS_Block_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int, dvs: bool):
        super().__init__()
        self.attn = MS_SSA_Conv(dim, num_heads, dvs)
        self.mlp = MS_MLP_Conv(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


class SpikeDrivenTransformer(nn.Module):
    """``sdt``: time encoding, patch_embed, blocks, membrane mean over tokens, head_lif, head, mean over T."""

    def __init__(
        self, in_channels: int, embed_dims: int, num_heads: int, depths: int, num_classes: int, T: int,
        pooling_stat: str, dvs_mode: bool,
    ):
        super().__init__()
        self.T = T
        self.patch_embed = MS_SPS(in_channels, embed_dims, pooling_stat)
        self.block = nn.ModuleList(MS_Block_Conv(embed_dims, num_heads, dvs_mode) for _ in range(depths))
        self.head_lif = lif()
        self.head = nn.Linear(embed_dims, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1) if x.ndim < 5 else x.transpose(0, 1).contiguous()
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return self.head(self.head_lif(x.flatten(3).mean(3))).mean(0)
