"""Small building blocks shared by the Spikingformer and Spikformer families.

Every Conv/BN runs on the time axis folded into the batch (``[T*B, ...]``), so BN statistics are
shared across time steps exactly as upstream, and no Python loop over T exists outside the neurons.
"""

from __future__ import annotations

import torch
from timm.layers import register_notrace_function
from torch import nn

#: Fixed attention scale used by every Spikingformer/Spikformer config (not 1/sqrt(d)).
ATTENTION_SCALE = 0.125


class SeqConvBN(nn.Module):
    """Conv followed by BatchNorm on a time-first tensor ``[T, B, C, ...]``."""

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x.flatten(0, 1))).unflatten(0, x.shape[:2])


def conv_bn_1d(in_dim: int, out_dim: int, bias: bool) -> SeqConvBN:
    """Per-token linear map (1x1 Conv1d) + BN1d over ``[T, B, C, N]``."""
    return SeqConvBN(nn.Conv1d(in_dim, out_dim, 1, bias=bias), nn.BatchNorm1d(out_dim))


def conv_bn_2d(in_dim: int, out_dim: int, kernel_size: int, bias: bool) -> SeqConvBN:
    """Conv2d (stride 1, same padding) + BN2d over ``[T, B, C, H, W]``."""
    conv = nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=bias)
    return SeqConvBN(conv, nn.BatchNorm2d(out_dim))


class SeqMaxPool(nn.MaxPool2d):
    """3x3/2 max pooling of a ``[T, B, C, H, W]`` spike map, halving H and W."""

    def __init__(self) -> None:
        super().__init__(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])


@register_notrace_function  # FX: one call node, its shape-dependent product order runs with the graph
def spike_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Softmax-free multi-head attention ``(Q K^T) V * 0.125`` on ``[T, B, D, N]`` spike tensors.

    Channel ``c`` belongs to head ``c // (D / num_heads)``. The product is evaluated in whichever order
    is cheaper (``Q (K^T V)`` when N > d); with binary Q, K, V both orders are exact integer sums.
    """
    t, b, d, n = q.shape
    head_dim = d // num_heads

    def heads(x: torch.Tensor) -> torch.Tensor:  # [T, B, D, N] -> [T, B, h, N, d]
        return x.reshape(t, b, num_heads, head_dim, n).transpose(-1, -2)

    qh, kh, vh = heads(q), heads(k), heads(v)
    if n > head_dim:
        y = qh @ (kh.transpose(-1, -2) @ vh)
    else:
        y = (qh @ kh.transpose(-1, -2)) @ vh
    return (y * ATTENTION_SCALE).transpose(-1, -2).reshape(t, b, d, n)


class SeqDropPath(nn.Module):
    """Stochastic depth for ``[T, B, ...]`` tensors: one keep/drop draw per sample, shared over T."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask_shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        mask = x.new_empty(mask_shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ResidualBlock(nn.Module):
    """``x + attn(x)``, then ``x + mlp(x)``, each branch under stochastic depth.

    Both families share this shape; where their LIFs sit inside the branches decides what the stream
    carries (Spikingformer: real-valued BN outputs; Spikformer: spike sums).
    """

    def __init__(self, attn: nn.Module, mlp: nn.Module, drop_path: float) -> None:
        super().__init__()
        self.attn = attn
        self.mlp = mlp
        self.drop_path = SeqDropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates over the blocks, as in timm/DeiT."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]
