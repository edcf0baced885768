"""The part every spiking transformer here shares: input checks, time encoding, reset and readout."""

from __future__ import annotations

from typing import Literal

import torch
from spikingjelly.activation_based import functional
from torch import nn

InputKind = Literal["static", "event"]


def check_dims(embed_dim: int, num_heads: int) -> None:
    """Fail at construction, with the reason, on an embedding the tokenizer or heads cannot split."""
    if embed_dim <= 0 or embed_dim % 8:
        raise ValueError(
            f"embed_dim={embed_dim} must be a positive multiple of 8: the tokenizer widens "
            f"D/8 -> D/4 -> D/2 -> D"
        )
    if num_heads <= 0 or embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")


class SpikingTransformer(nn.Module):
    """Tokenizer -> residual blocks -> mean over tokens, then over T -> linear head.

    Static inputs ``[B, C, H, W]`` are repeated T times (direct encoding); event inputs
    ``[B, T, C, H, W]`` carry their own time axis. Neurons are reset at the start of every forward,
    so no caller can leak membrane state between batches.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        blocks: list[nn.Module],
        *,
        embed_dim: int,
        num_heads: int,
        num_classes: int,
        img_size: int,
        in_chans: int,
        T: int,
        input_kind: InputKind,
    ) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"T (time steps) must be >= 1, got {T}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.tokenizer = tokenizer
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.img_size = img_size
        self.in_chans = in_chans
        self.T = T
        self.input_kind = input_kind

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch axis."""
        spatial = (self.in_chans, self.img_size, self.img_size)
        return (self.T, *spatial) if self.input_kind == "event" else spatial

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Check the input and return it time-first, ``[T, B, C, H, W]``."""
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            layout = "[B, T, C, H, W] event frames" if self.input_kind == "event" else "[B, C, H, W] images"
            raise ValueError(
                f"{type(self).__name__} expects {layout} of shape [B, {', '.join(map(str, self.input_shape))}]"
                f" (T={self.T}), got {list(x.shape)}"
            )
        if self.input_kind == "event":
            return x.transpose(0, 1).contiguous()
        return x.unsqueeze(0).expand(self.T, *x.shape).contiguous()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stream after the last block, ``[T, B, D, H', W']``."""
        functional.reset_net(self)
        x = self.tokenizer(self.encode(x))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.head(x.flatten(3).mean(3).mean(0))
