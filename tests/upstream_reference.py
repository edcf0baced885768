"""An independent transcription of the upstream Spikingformer and Spikformer networks (test helper).

Written from SPEC.md §1-3 alone, with upstream's module names, so its ``state_dict()`` has the keys of
an upstream checkpoint and its forward is the upstream computation: per-module reshapes of
``[T, B, ...]`` with time folded into the batch for every Conv/BN, spikingjelly LIFs on the time-first
tensor, LayerNorms built and never called. The logit-equivalence tests load its weights into our models
through ``load_upstream_state_dict``; a disagreement means one side departs from the SPEC.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

SCALE = 0.125


def lif(tau: float, v_threshold: float = 1.0) -> neuron.LIFNode:
    return neuron.LIFNode(tau=tau, detach_reset=True, step_mode="m", v_threshold=v_threshold)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[T, B, C, N]`` -> ``[T, B, h, N, C/h]`` with channel ``c = head * d + j``, as upstream."""
    T, B, C, N = x.shape
    return x.transpose(-1, -2).reshape(T, B, N, num_heads, C // num_heads).permute(0, 1, 3, 2, 4)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, h, N, d]`` -> ``[T, B, h*d, N]``."""
    T, B, h, N, d = x.shape
    return x.transpose(3, 4).reshape(T, B, h * d, N)


def ssa_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_first: bool) -> torch.Tensor:
    """Softmax-free attention: ImageNet files compute Q(K^T V), CIFAR/DVS files (Q K^T) V; scale 0.125."""
    if kv_first:
        return q @ (k.transpose(-2, -1) @ v) * SCALE
    return (q @ k.transpose(-2, -1)) @ v * SCALE


# ---------------------------------------------------------------- Spikingformer (SPEC §2, §3a-3c)


class SpikingformerTokenizer(nn.Module):
    """Five 3x3 conv/BN stages; stage i>0 runs LIF -> (MaxPool) -> conv -> BN. Ends on a BN output.

    ``names`` are upstream's stage prefixes (``proj, proj1..proj4`` or ``block0..block4``).
    """

    def __init__(self, in_channels: int, embed_dims: int, tau: float, names: list[str], pooled: list[bool]):
        super().__init__()
        widths = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims, embed_dims]
        self.names, self.pooled = names, pooled
        for i, name in enumerate(names):
            setattr(self, f"{name}_conv", nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(widths[i + 1]))
            if i > 0:
                setattr(self, f"{name}_lif", lif(tau))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        for i, name in enumerate(self.names):
            if i > 0:
                x = getattr(self, f"{name}_lif")(x.reshape(T, B, *x.shape[1:])).flatten(0, 1)
                if self.pooled[i]:
                    x = self.maxpool(x)
            x = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x))
        return x.reshape(T, B, *x.shape[1:])


class SpikingformerSSA(nn.Module):
    def __init__(self, dim: int, num_heads: int, tau: float, kv_first: bool):
        super().__init__()
        self.num_heads, self.kv_first = num_heads, kv_first
        self.proj_lif = lif(tau)
        for name in "qkv":
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", lif(tau))
        self.attn_lif = lif(tau, v_threshold=0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        N = H * W
        x = self.proj_lif(x).flatten(3)
        x_for_qkv = x.flatten(0, 1)
        q, k, v = (
            split_heads(
                getattr(self, f"{n}_lif")(
                    getattr(self, f"{n}_bn")(getattr(self, f"{n}_conv")(x_for_qkv)).reshape(T, B, C, N)
                ),
                self.num_heads,
            )
            for n in "qkv"
        )
        x = merge_heads(ssa_product(q, k, v, self.kv_first))
        x = self.attn_lif(x).flatten(0, 1)
        return self.proj_bn(self.proj_conv(x)).reshape(T, B, C, H, W)


class SpikingformerMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, tau: float):
        super().__init__()
        self.mlp1_lif = lif(tau)
        self.mlp1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.mlp1_bn = nn.BatchNorm2d(hidden)
        self.mlp2_lif = lif(tau)
        self.mlp2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.mlp2_bn = nn.BatchNorm2d(dim)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        x = self.mlp1_bn(self.mlp1_conv(self.mlp1_lif(x).flatten(0, 1))).reshape(T, B, self.hidden, H, W)
        return self.mlp2_bn(self.mlp2_conv(self.mlp2_lif(x).flatten(0, 1))).reshape(T, B, C, H, W)


class SpikingformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, tau: float, kv_first: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)  # built, never used
        self.attn = SpikingformerSSA(dim, num_heads, tau, kv_first)
        self.norm2 = nn.LayerNorm(dim)  # built, never used
        self.mlp = SpikingformerMLP(dim, 4 * dim, tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


# ---------------------------------------------------------------- Spikformer (SPEC §3f)


class SPS(nn.Module):
    """Four conv -> BN -> LIF (-> MaxPool) stages, then RPE: conv -> BN -> LIF plus the pooled spikes."""

    def __init__(self, in_channels: int, embed_dims: int, tau: float, pooled: list[bool]):
        super().__init__()
        widths = [in_channels, embed_dims // 8, embed_dims // 4, embed_dims // 2, embed_dims]
        self.suffixes, self.pooled = ["", "1", "2", "3"], pooled
        for i, s in enumerate(self.suffixes):
            setattr(self, f"proj_conv{s}", nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{s}", nn.BatchNorm2d(widths[i + 1]))
            setattr(self, f"proj_lif{s}", lif(tau))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.rpe_conv = nn.Conv2d(embed_dims, embed_dims, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dims)
        self.rpe_lif = lif(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        for s, pooled in zip(self.suffixes, self.pooled, strict=True):
            x = getattr(self, f"proj_bn{s}")(getattr(self, f"proj_conv{s}")(x))
            x = getattr(self, f"proj_lif{s}")(x.reshape(T, B, *x.shape[1:])).flatten(0, 1)
            if pooled:
                x = self.maxpool(x)
        x_feat = x.reshape(T, B, *x.shape[1:])
        x = self.rpe_bn(self.rpe_conv(x))
        return self.rpe_lif(x.reshape(T, B, *x.shape[1:])) + x_feat  # [T, B, C, H, W]


class SpikformerImageNetSSA(nn.Module):
    """Conv1d q/k/v without bias on ``[T, B, C, N]``; projection conv -> BN -> LIF."""

    def __init__(self, dim: int, num_heads: int, tau: float):
        super().__init__()
        self.num_heads = num_heads
        for name in "qkv":
            setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", lif(tau))
        self.attn_lif = lif(tau, v_threshold=0.5)
        self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = lif(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        N = H * W
        x_for_qkv = x.flatten(3).flatten(0, 1)
        q, k, v = (
            split_heads(
                getattr(self, f"{n}_lif")(
                    getattr(self, f"{n}_bn")(getattr(self, f"{n}_conv")(x_for_qkv)).reshape(T, B, C, N)
                ),
                self.num_heads,
            )
            for n in "qkv"
        )
        x = self.attn_lif(merge_heads(ssa_product(q, k, v, kv_first=True))).flatten(0, 1)
        return self.proj_lif(self.proj_bn(self.proj_conv(x)).reshape(T, B, C, H, W))


class SpikformerImageNetMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, tau: float):
        super().__init__()
        self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden)
        self.fc1_lif = lif(tau)
        self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = lif(tau)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        x = self.fc1_lif(self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, self.hidden, H, W))
        return self.fc2_lif(self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W))


def linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Spikformer CIFAR's token-major projection: Linear on ``[TB, N, C]``, BN1d over channels."""
    return bn(linear(x).transpose(-1, -2)).transpose(-1, -2)


class SpikformerCifarSSA(nn.Module):
    """Linear q/k/v *with bias* on the token-major stream ``[T, B, N, C]``."""

    def __init__(self, dim: int, num_heads: int, tau: float):
        super().__init__()
        self.num_heads = num_heads
        for name in ("q", "k", "v", "proj"):
            setattr(self, f"{name}_linear", nn.Linear(dim, dim))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", lif(tau))
        self.attn_lif = lif(tau, v_threshold=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, C = x.shape
        x_for_qkv = x.flatten(0, 1)
        q, k, v = (
            split_heads(
                getattr(self, f"{n}_lif")(
                    linear_bn(getattr(self, f"{n}_linear"), getattr(self, f"{n}_bn"), x_for_qkv).reshape(T, B, N, C)
                ).transpose(-1, -2),
                self.num_heads,
            )
            for n in "qkv"
        )
        x = merge_heads(ssa_product(q, k, v, kv_first=False)).transpose(-1, -2)  # [T, B, N, C]
        x = self.attn_lif(x).flatten(0, 1)
        return self.proj_lif(linear_bn(self.proj_linear, self.proj_bn, x).reshape(T, B, N, C))


class SpikformerCifarMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, tau: float):
        super().__init__()
        self.fc1_linear = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = lif(tau)
        self.fc2_linear = nn.Linear(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = lif(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, C = x.shape
        x = self.fc1_lif(linear_bn(self.fc1_linear, self.fc1_bn, x.flatten(0, 1)).reshape(T, B, N, -1))
        return self.fc2_lif(linear_bn(self.fc2_linear, self.fc2_bn, x.flatten(0, 1)).reshape(T, B, N, C))


class SpikformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, tau: float, cifar: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)  # built, never used
        self.attn = (SpikformerCifarSSA if cifar else SpikformerImageNetSSA)(dim, num_heads, tau)
        self.norm2 = nn.LayerNorm(dim)  # built, never used
        self.mlp = (SpikformerCifarMLP if cifar else SpikformerImageNetMLP)(dim, 4 * dim, tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


# ---------------------------------------------------------------- whole networks


class UpstreamNet(nn.Module):
    """``vit_snn``: time encoding, reset, patch_embed, blocks, mean over tokens then T, linear head."""

    def __init__(
        self,
        patch_embed: nn.Module,
        blocks: list[nn.Module],
        dim: int,
        num_classes: int,
        T: int,
        event: bool,
        token_major: bool = False,
    ):
        super().__init__()
        self.patch_embed = patch_embed
        self.block = nn.ModuleList(blocks)
        self.head = nn.Linear(dim, num_classes)
        self.T, self.event, self.token_major = T, event, token_major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        x = x.permute(1, 0, 2, 3, 4) if self.event else x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        x = self.patch_embed(x)
        if self.token_major:
            x = x.flatten(3).transpose(-1, -2)  # [T, B, N, C]
        for blk in self.block:
            x = blk(x)
        x = x.mean(2) if self.token_major else x.flatten(3).mean(3)
        return self.head(x.mean(0))


SPIKINGFORMER_LAYOUTS = {
    # layout: (stage names, pool before stage i, tau, event input, Q(K^T V) order)
    "imagenet": (["proj", "proj1", "proj2", "proj3", "proj4"], [False, True, True, True, True], 2.0, False, True),
    "dvs": (["proj", "proj1", "proj2", "proj3", "proj4"], [False, True, True, True, True], 1.5, True, False),
    "cifar": ([f"block{i}" for i in range(5)], [False, False, False, True, True], 2.0, False, False),
}
SPIKFORMER_POOLS = {"imagenet": [True, True, True, True], "cifar": [False, False, True, True]}


def upstream_spikingformer(
    layout: str, in_channels: int, embed_dims: int, num_heads: int, depths: int, num_classes: int, T: int = 4
) -> UpstreamNet:
    names, pooled, tau, event, kv_first = SPIKINGFORMER_LAYOUTS[layout]
    tokenizer = SpikingformerTokenizer(in_channels, embed_dims, tau, names, pooled)
    blocks = [SpikingformerBlock(embed_dims, num_heads, tau, kv_first) for _ in range(depths)]
    return UpstreamNet(tokenizer, blocks, embed_dims, num_classes, T, event)


def upstream_spikformer(
    layout: str, in_channels: int, embed_dims: int, num_heads: int, depths: int, num_classes: int, T: int = 4
) -> UpstreamNet:
    cifar = layout == "cifar"
    sps = SPS(in_channels, embed_dims, 2.0, SPIKFORMER_POOLS[layout])
    blocks = [SpikformerBlock(embed_dims, num_heads, 2.0, cifar) for _ in range(depths)]
    return UpstreamNet(sps, blocks, embed_dims, num_classes, T, event=False, token_major=cifar)


@torch.no_grad()
def randomize_(net: UpstreamNet, sample: torch.Tensor, generator: torch.Generator) -> None:
    """Random BN affine parameters, running stats calibrated on ``sample`` then randomly perturbed.

    Calibrating keeps every BN output near unit scale, so the LIFs neither stay silent nor always fire.
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.rand(like.shape, generator=generator) * (high - low) + low

    for bn in bns:
        bn.weight.copy_(uniform(bn.weight, 0.8, 1.8))
        bn.bias.copy_(uniform(bn.bias, -0.3, 0.7))
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one forward sets the batch statistics
    net.train()(sample)
    for bn in bns:
        bn.momentum = 0.1
        bn.running_mean.add_(uniform(bn.running_mean, -0.1, 0.1))
        bn.running_var.mul_(uniform(bn.running_var, 0.8, 1.25))
        bn.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=generator)))
    net.eval()
