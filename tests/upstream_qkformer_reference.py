"""An independent transcription of the upstream QKFormer networks (test helper).

Written from the structure in ``shared/PEERS.md`` section (c), with upstream's module names, so its
``state_dict()`` has the keys of an upstream checkpoint (ImageNet ``imagenet/qkformer.py``, CIFAR
``cifar10/model.py``, DVS ``cifar10-dvs/model.py``) and its forward is the upstream computation:
per-module reshapes with time folded into the batch for every Conv/BN, spikingjelly LIFs (tau 2.0
everywhere, DVS included) on time-first tensors, max-pooling between BN and LIF, ``Q (K^T V)`` in
the self-attention. The QKFormer equivalence tests load its weights into our models through
``load_upstream_state_dict``.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn
from upstream_reference import lif, merge_heads, split_heads, ssa_product

TAU = 2.0


class NamedConvs(nn.Module):
    """Holds ``{name}_conv``, ``{name}_bn``, ``{name}_lif`` triples and runs one as upstream writes it."""

    def add(self, name: str, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        padding = 1 if kernel == 3 else 0
        setattr(self, f"{name}_conv", nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(c_out))
        setattr(self, f"{name}_lif", lif(TAU))

    def run(self, name: str, x: torch.Tensor, T: int, B: int, pool: bool = False) -> torch.Tensor:
        """``x`` is ``[T*B, C, H, W]``; returns the LIF spikes ``[T, B, C', H', W']``."""
        y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x))
        if pool:
            y = nn.functional.max_pool2d(y, kernel_size=3, stride=2, padding=1)
        return getattr(self, f"{name}_lif")(y.reshape(T, B, *y.shape[1:]))


class PatchEmbedInit(NamedConvs):
    """The SPEDS stem of each upstream file; ``embed_dims`` is the first stage's width."""

    def __init__(self, layout: str, in_channels: int, embed_dims: int):
        super().__init__()
        self.layout = layout
        E = embed_dims
        if layout == "imagenet":  # proj (pool), proj1 (pool), proj2; shortcut from proj's spikes, stride 2
            self.add("proj", in_channels, E // 2)
            self.add("proj1", E // 2, E)
            self.add("proj2", E, E)
            self.add("proj_res", E // 2, E, kernel=1, stride=2)
        elif layout == "cifar":  # no pooling; shortcut stride 1
            self.add("proj", in_channels, E // 2)
            self.add("proj1", E // 2, E)
            self.add("proj_res", E // 2, E, kernel=1, stride=1)
        else:  # dvs: proj, proj1 (pool), proj2 (pool), proj3 (pool); shortcut from proj1's spikes, stride 4
            self.add("proj", in_channels, E // 8)
            self.add("proj1", E // 8, E // 4)
            self.add("proj2", E // 4, E // 2)
            self.add("proj3", E // 2, E)
            self.add("proj_res", E // 4, E, kernel=1, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        if self.layout == "imagenet":
            feat = self.run("proj", x, T, B, pool=True).flatten(0, 1)
            x = self.run("proj1", feat, T, B, pool=True).flatten(0, 1)
            x = self.run("proj2", x, T, B)
        elif self.layout == "cifar":
            feat = self.run("proj", x, T, B).flatten(0, 1)
            x = self.run("proj1", feat, T, B)
        else:
            x = self.run("proj", x, T, B).flatten(0, 1)
            feat = self.run("proj1", x, T, B, pool=True).flatten(0, 1)
            x = self.run("proj2", feat, T, B, pool=True).flatten(0, 1)
            x = self.run("proj3", x, T, B, pool=True)
        return x + self.run("proj_res", feat, T, B)


class PatchEmbeddingStage(NamedConvs):
    """Downsampling from ``embed_dims // 2`` to ``embed_dims``: two 3x3 convs and a 1x1 stride-2 shortcut."""

    def __init__(self, layout: str, embed_dims: int):
        super().__init__()
        self.layout = layout
        # ImageNet: proj3 pools, proj4 does not. CIFAR: proj3 then proj4 pools. DVS: proj then proj4 pools.
        self.first = "proj" if layout == "dvs" else "proj3"
        self.add(self.first, embed_dims // 2, embed_dims)
        self.add("proj4", embed_dims, embed_dims)
        self.add("proj_res", embed_dims // 2, embed_dims, kernel=1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        imagenet = self.layout == "imagenet"
        y = self.run(self.first, x, T, B, pool=imagenet).flatten(0, 1)
        y = self.run("proj4", y, T, B, pool=not imagenet)
        return y + self.run("proj_res", x, T, B)


class MLP(nn.Module):
    """``{p}1``/``{p}2`` 1x1 Conv2d (bias) -> BN2d -> LIF; p is ``fc`` (ImageNet) or ``mlp`` (CIFAR, DVS)."""

    def __init__(self, dim: int, hidden: int, prefix: str):
        super().__init__()
        self.prefix = prefix
        for i, (c_in, c_out) in ((1, (dim, hidden)), (2, (hidden, dim))):
            setattr(self, f"{prefix}{i}_conv", nn.Conv2d(c_in, c_out, kernel_size=1, stride=1))
            setattr(self, f"{prefix}{i}_bn", nn.BatchNorm2d(c_out))
            setattr(self, f"{prefix}{i}_lif", lif(TAU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        for i in (1, 2):
            y = getattr(self, f"{self.prefix}{i}_conv")(x.flatten(0, 1))
            y = getattr(self, f"{self.prefix}{i}_bn")(y)
            x = getattr(self, f"{self.prefix}{i}_lif")(y.reshape(T, B, -1, H, W))
        return x


class ConvBNLIF1d(nn.Module):
    """Holds the 1x1 Conv1d / BN1d / LIF projections ``names`` of an attention module."""

    def project(self, name: str, x: torch.Tensor, T: int, B: int) -> torch.Tensor:
        y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x))
        return getattr(self, f"{name}_lif")(y.reshape(T, B, *y.shape[1:]))

    def add(self, name: str, dim: int, bias: bool, v_threshold: float = 1.0) -> None:
        setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=bias))
        setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
        setattr(self, f"{name}_lif", lif(TAU, v_threshold))


class Token_QK_Attention(ConvBNLIF1d):
    """Per head, the Q spikes summed over the head's channels pass a v_th 0.5 LIF: a token mask on K."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.add("q", dim, bias=False)
        self.add("k", dim, bias=False)
        self.attn_lif = lif(TAU, 0.5)
        self.add("proj", dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        flat = x.flatten(3).flatten(0, 1)  # [T*B, C, N]
        heads = (T, B, self.num_heads, C // self.num_heads, H * W)
        q = self.project("q", flat, T, B).reshape(heads)
        k = self.project("k", flat, T, B).reshape(heads)
        attn = self.attn_lif(torch.sum(q, dim=3, keepdim=True))
        y = torch.mul(attn, k).flatten(2, 3)  # [T, B, C, N]
        return self.project("proj", y.flatten(0, 1), T, B).reshape(T, B, C, H, W)


class Spiking_Self_Attention(ConvBNLIF1d):
    """Spikformer SSA: ``Q (K^T V) * 0.125`` -> LIF(v_th 0.5) -> proj conv (bias), BN, LIF."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        for name in "qkv":
            self.add(name, dim, bias=False)
        self.attn_lif = lif(TAU, 0.5)
        self.add("proj", dim, bias=True)
        self.qkv_mp = nn.MaxPool1d(4)  # built upstream, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        flat = x.flatten(3).flatten(0, 1)
        q, k, v = (split_heads(self.project(name, flat, T, B), self.num_heads) for name in "qkv")
        y = self.attn_lif(merge_heads(ssa_product(q, k, v, kv_first=True)))
        return self.project("proj", y.flatten(0, 1), T, B).reshape(T, B, C, H, W)


class TokenSpikingTransformer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, mlp_prefix: str):
        super().__init__()
        self.tssa = Token_QK_Attention(dim, num_heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio), mlp_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tssa(x)
        return x + self.mlp(x)


class SpikingTransformer(nn.Module):
    """The last stage's block; its attention is ``attn`` in the ImageNet file, ``ssa`` in CIFAR and DVS."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, mlp_prefix: str, attn_name: str):
        super().__init__()
        self.attn_name = attn_name
        setattr(self, attn_name, Spiking_Self_Attention(dim, num_heads))
        self.mlp = MLP(dim, int(dim * mlp_ratio), mlp_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + getattr(self, self.attn_name)(x)
        return x + self.mlp(x)


class UpstreamQKFormer(nn.Module):
    """``patch_embed1``, ``stage1``, ``patch_embed2``, ``stage2`` [, ``patch_embed3``, ``stage3``], ``head``."""

    def __init__(
        self,
        layout: str,
        in_channels: int,
        embed_dims: int,
        num_heads: int,
        depths: int,
        mlp_ratio: float,
        num_classes: int,
        T: int,
    ):
        super().__init__()
        self.layout, self.T = layout, T
        imagenet = layout == "imagenet"
        prefix = "fc" if imagenet else "mlp"
        attn_name = "attn" if imagenet else "ssa"
        if layout == "dvs":  # stem to D/2, 1 Q-K block, downsample to D, depths - 1 SSA blocks (upstream: 1)
            widths, qk_blocks = [embed_dims // 2, embed_dims], [1]
        else:  # stem to D/4, Q-K stages at D/4 and D/2, then SSA at D
            widths, qk_blocks = [embed_dims // 4, embed_dims // 2, embed_dims], [1, 2 if imagenet else 1]
        self.patch_embed1 = PatchEmbedInit(layout, in_channels, widths[0])
        for i, dim in enumerate(widths, start=1):
            if i > 1:
                setattr(self, f"patch_embed{i}", PatchEmbeddingStage(layout, dim))
            if i <= len(qk_blocks):
                blocks = [TokenSpikingTransformer(dim, num_heads, mlp_ratio, prefix) for _ in range(qk_blocks[i - 1])]
            else:
                count = depths - sum(qk_blocks)
                blocks = [SpikingTransformer(dim, num_heads, mlp_ratio, prefix, attn_name) for _ in range(count)]
            setattr(self, f"stage{i}", nn.ModuleList(blocks))
        self.num_stages = len(widths)
        self.head = nn.Linear(embed_dims, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        if self.layout == "dvs":
            x = x.permute(1, 0, 2, 3, 4)
        else:
            x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"stage{i}"):
                x = blk(x)
        return self.head(x.flatten(3).mean(3).mean(0))
