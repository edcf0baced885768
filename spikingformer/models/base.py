"""The part every spiking transformer here shares: construction checks, time encoding, reset, readout, and
timm's model interface.

timm's interface is what timm's own ``tests/test_models.py`` checks (``tests/timm_models/`` runs it on every
registered model): ``pretrained_cfg`` (set by timm's builder), ``num_features`` / ``head_hidden_size``,
``get_classifier`` / ``reset_classifier``, ``forward_features`` / ``forward_head``, ``num_classes=0`` and
``global_pool=''``, ``forward_intermediates`` / ``prune_intermediate_layers`` / ``feature_info`` (so
``features_only=True`` works through timm's ``FeatureGetterNet``), ``set_grad_checkpointing``,
``group_matcher``, ``no_weight_decay``, and ``torch.fx`` tracing. Feature maps are timm's NCHW: the residual
stream ``[T, B, D, H', W']`` averaged over its T time steps. ``forward`` itself reads the stream as upstream
does (token mean, then time mean), so logits are bit-for-bit those of the paper's readout.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal

import torch
from spikingjelly.activation_based import functional
from timm.layers import register_notrace_function, register_notrace_module
from timm.models import checkpoint
from timm.models._features import feature_take_indices
from torch import nn

from spikingformer.energy.conventions import COMMON, EnergyConvention
from spikingformer.models.layers import drop_path_rates
from spikingformer.neurons import MultiStepLIF

InputKind = Literal["static", "event"]
#: ``global_pool`` values: mean over tokens and time steps, or none (NCHW maps: features, or per-token logits).
GLOBAL_POOLS = ("avg", "")

# A neuron's loop over T is one opaque step of a traced graph (timm's FX tracer keeps it a leaf module).
register_notrace_module(MultiStepLIF)


def check_dims(embed_dim: int, num_heads: int) -> None:
    """Fail at construction, with the reason, on an embedding the tokenizer or heads cannot split."""
    if embed_dim <= 0 or embed_dim % 8:
        raise ValueError(
            f"embed_dim={embed_dim} must be a positive multiple of 8: the tokenizer widens D/8 -> D/4 -> D/2 -> D"
        )
    if num_heads <= 0 or embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")


@register_notrace_function
@torch.fx.wrap  # also a leaf when a family's own forward (not this module's) starts the trace
def time_first(x: torch.Tensor, sample_shape: tuple[int, ...], T: int, event: bool, model: str) -> torch.Tensor:
    """Check the input against one sample's shape and return it time-first, ``[T, B, C, H, W]``.

    Images (and single event frames, for an event model) are repeated T times (direct encoding); event
    inputs ``[B, T, C, H, W]`` carry their own time axis. A graph traced by timm keeps this as one call, so
    the check still runs when the graph runs.
    """
    frame = sample_shape[-3:]
    if event and x.ndim == 5 and tuple(x.shape[1:]) == sample_shape:
        return x.transpose(0, 1).contiguous()
    if x.ndim == 4 and tuple(x.shape[1:]) == frame:
        return x.unsqueeze(0).expand(T, *x.shape).contiguous()
    expected = ", ".join(map(str, frame))
    if event:
        wanted = f"[B, T, C, H, W] event frames of shape [B, {T}, {expected}] (or single frames [B, {expected}])"
    else:
        wanted = f"[B, C, H, W] images of shape [B, {expected}]"
    raise ValueError(f"{model} expects {wanted} (T={T}), got {list(x.shape)}")


@register_notrace_function
@torch.fx.wrap
def start_at_rest(x: torch.Tensor, *modules: nn.Module) -> torch.Tensor:
    """Reset every neuron in ``modules`` and pass ``x`` on: a node of a traced graph, so it resets too."""
    for module in modules:
        functional.reset_net(module)
    return x


def block_from_rest(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``block`` from resting neurons, as in the forward pass; a checkpointed block recomputes this."""
    functional.reset_net(block)
    return block(x)


class SpikingTransformer(nn.Module):
    """Tokenizer -> residual blocks -> mean over tokens, then over T -> linear head.

    A family subclass supplies ``LAYOUTS``, ``build_tokenizer`` and ``build_block``; everything else
    (argument checks, time encoding, neuron reset, readout, timm's interface) lives here. Static inputs
    ``[B, C, H, W]`` are repeated T times (direct encoding); event inputs ``[B, T, C, H, W]`` carry their
    own time axis. Neurons are reset at the start of every forward, so no caller can leak membrane state
    between batches (nor a checkpointed block into its recomputation).
    """

    #: timm: layout of ``forward_features`` / ``forward_intermediates`` outputs.
    output_fmt = "NCHW"

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
        global_pool: str = "avg",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout={layout!r} is not one of {list(self.LAYOUTS)} for {type(self).__name__}")
        check_dims(embed_dim, num_heads)
        if T < 1:
            raise ValueError(f"T (time steps) must be >= 1, got {T}")
        check_head(num_classes, global_pool)
        with torch.device(device) if device is not None else nullcontext():
            self.tokenizer = self.build_tokenizer(in_chans, embed_dim, tau, layout)
            if img_size % self.tokenizer.downsample:
                raise ValueError(
                    f"img_size={img_size} must be divisible by {self.tokenizer.downsample} for layout {layout!r}"
                )
            self.blocks = self.build_blocks(embed_dim, depth, num_heads, mlp_ratio, tau, drop_path_rate, layout)
            self.head = new_head(embed_dim, num_classes)
        if dtype is not None:
            self.to(dtype=dtype)
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dim
        self.grad_checkpointing = False
        #: timm: one tap for the tokenizer output, then one per block (a hierarchical family sets its own).
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=self.tokenizer.downsample, module=name)
            for name in ["tokenizer", *(f"blocks.{i}" for i in range(len(self.blocks)))]
        ]
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
    def batch_coupling(cls, kwargs: Mapping[str, Any]) -> str | None:
        """What makes a sample's outputs depend on the other samples of its batch, in eval too, in the family's
        model built with ``kwargs`` (a label runs are tagged with); None when nothing does. Such a model's top-1
        and spike counts depend on the per-rank batch size and order, so a figure is comparable only at the
        per-rank batch it was measured with."""
        return None

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

    def forward_stream(self, x: torch.Tensor) -> torch.Tensor:
        """The spiking computation: the residual stream after the last block, ``[T, B, D, H', W']``."""
        x = self._tokens(x)
        for block in self.blocks:
            x = self._block(block, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's unpooled features: the residual stream averaged over time, NCHW ``[B, D, H', W']``."""
        return self.forward_stream(x).mean(0)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool ``forward_features`` over the tokens, then the classifier.

        With ``global_pool=""`` nothing is pooled: the classifier scores every token, NCHW ``[B, classes, H', W']``.
        """
        if self.global_pool == "avg":
            x = x.flatten(2).mean(2)
            return x if pre_logits else self.head(x)
        return x if pre_logits else self.head(x.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stream(x)
        if self.global_pool == "avg":
            return self.head(x.flatten(3).mean(3).mean(0))  # upstream's order: tokens, then time steps
        return self.forward_head(x.mean(0))

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = time_first(x, self.input_shape, self.T, self.input_kind == "event", type(self).__name__)
        return self.tokenizer(start_at_rest(x, *self.children()))

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not isinstance(x, torch.fx.Proxy):
            return checkpoint(block_from_rest, block, x)
        return block(x)

    # ------------------------------------------------------------------ timm's model interface

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head for ``num_classes`` (0: none, the pooled features come out), on the model's device/dtype."""
        global_pool = self.global_pool if global_pool is None else global_pool
        check_head(num_classes, global_pool)
        reference = next(self.tokenizer.parameters())
        with torch.device(reference.device):
            self.head = new_head(self.num_features, num_classes).to(reference.dtype).train(self.training)
        self.num_classes = num_classes
        self.global_pool = global_pool

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The taps of ``feature_info`` (tokenizer, then each block), NCHW averaged over time.

        ``indices``: the last n taps (int), these taps (list), all (None). There is no final norm, so
        ``norm`` changes nothing. Returns ``(forward_features output, taps)`` or only the taps.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: only 'NCHW' is supported")
        take_indices, max_index = feature_take_indices(len(self.blocks) + 1, indices)
        x = self._tokens(x)
        intermediates = [x.mean(0)] if 0 in take_indices else []
        for i, block in enumerate(self.blocks[:max_index] if stop_early else self.blocks, start=1):
            x = self._block(block, x)
            if i in take_indices:
                intermediates.append(x.mean(0))
        return intermediates if intermediates_only else (x.mean(0), intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last tap wanted (and the head); returns the taps' absolute indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks) + 1, indices)
        self.blocks = self.blocks[:max_index]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations (real memory drop)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, object]:
        """Parameter groups for timm's layer-wise lr decay: the tokenizer, each block, then the head."""
        return dict(stem=r"^tokenizer", blocks=r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None)])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """None beyond timm's rule (every 1-D parameter: biases, BN): no position embedding or tokens here."""
        return set()


def check_head(num_classes: int, global_pool: str) -> None:
    """Fail on a class count or pooling the readout cannot take, naming the value and what is allowed."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool={global_pool!r} is not one of {list(GLOBAL_POOLS)}")


def new_head(dim: int, num_classes: int) -> nn.Module:
    """The linear classifier (truncated-normal weights, zero bias), or nothing when ``num_classes`` is 0."""
    if not num_classes:
        return nn.Identity()
    head = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head
