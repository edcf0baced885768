"""The part every spiking transformer here shares: construction checks, time encoding, reset and readout."""

from __future__ import annotations

from typing import Literal

import torch
from spikingjelly.activation_based import functional
from torch import nn

from spikingformer.energy.conventions import COMMON, EnergyConvention
from spikingformer.models.layers import drop_path_rates

InputKind = Literal["static", "event"]


def check_dims(embed_dim: int, num_heads: int) -> None:
    """Fail at construction, with the reason, on an embedding the tokenizer or heads cannot split."""
    if embed_dim <= 0 or embed_dim % 8:
        raise ValueError(
            f"embed_dim={embed_dim} must be a positive multiple of 8: the tokenizer widens D/8 -> D/4 -> D/2 -> D"
        )
    if num_heads <= 0 or embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")


class SpikingTransformer(nn.Module):
    """Tokenizer -> residual blocks -> mean over tokens, then over T -> linear head.

    A family subclass supplies ``LAYOUTS``, ``build_tokenizer`` and ``build_block``; everything else
    (argument checks, time encoding, neuron reset, readout) lives here. Static inputs ``[B, C, H, W]``
    are repeated T times (direct encoding); event inputs ``[B, T, C, H, W]`` carry their own time axis.
    Neurons are reset at the start of every forward, so no caller can leak membrane state between batches.
    """

    #: Tokenizer layouts the family implements; ``"dvs"`` means event-frame input.
    LAYOUTS: tuple[str, ...] = ()
    #: How this family's own paper counted energy; every model is also costed under ``energy.COMMON``.
    PAPER_ENERGY: EnergyConvention = COMMON
    #: Further conventions the family reports beside those two (e.g. Spikformer's spike counts as ACs).
    EXTRA_ENERGY: tuple[EnergyConvention, ...] = ()

    def __init__(
        self,
        *,
        layout: str = "cifar",
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 384,
        depth: int = 4,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        T: int = 4,
        tau: float = 2.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {list(self.LAYOUTS)} for {type(self).__name__}")
        check_dims(embed_dim, num_heads)
        if T < 1:
            raise ValueError(f"T (time steps) must be >= 1, got {T}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.tokenizer = self.build_tokenizer(in_chans, embed_dim, tau, layout)
        if img_size % self.tokenizer.downsample:
            raise ValueError(
                f"img_size={img_size} must be divisible by {self.tokenizer.downsample} for layout {layout!r}"
            )
        self.blocks = self.build_blocks(embed_dim, depth, num_heads, mlp_ratio, tau, drop_path_rate, layout)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.layout = layout
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.img_size = img_size
        self.in_chans = in_chans
        self.T = T
        self.input_kind: InputKind = "event" if layout == "dvs" else "static"

    def build_tokenizer(self, in_chans: int, embed_dim: int, tau: float, layout: str) -> nn.Module:
        """The family's tokenizer; it must expose ``downsample`` (input side / token-grid side)."""
        raise NotImplementedError

    def build_block(
        self, dim: int, num_heads: int, mlp_ratio: float, tau: float, drop_path: float, layout: str
    ) -> nn.Module:
        """One residual block of the family."""
        raise NotImplementedError

    def build_blocks(
        self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, tau: float, drop_path_rate: float,
        layout: str,
    ) -> nn.ModuleList:
        """What runs between the tokenizer and the readout: ``depth`` blocks on one token grid.

        A hierarchical family overrides this to return its stages (downsampling + blocks) instead.
        """
        return nn.ModuleList(
            self.build_block(embed_dim, num_heads, mlp_ratio, tau, dp, layout)
            for dp in drop_path_rates(drop_path_rate, depth)
        )

    @classmethod
    def energy_conventions(cls) -> dict[str, EnergyConvention]:
        """Every convention the family is costed under, by label: "paper", "common", then its extras."""
        return {"paper": cls.PAPER_ENERGY, "common": COMMON, **{c.name: c for c in cls.EXTRA_ENERGY}}

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
