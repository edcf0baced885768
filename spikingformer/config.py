"""One training run's configuration: validated dataclasses built from plain dicts (YAML).

Configuration flows one way: YAML -> ``TrainConfig.from_dict`` -> engine. Unknown keys, wrong types and
impossible values raise ``ConfigError`` naming the key path, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from spikingformer._validation import ConfigError, Section, require, section_from_dict

DATASETS = ("imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture", "digits", "synthetic")


@dataclass
class ModelConfig(Section):
    """A registered model name plus constructor overrides (num_classes, num_heads, T, ...)."""

    name: str = "spikingformer_cifar_4_384"
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Fine-tune: start from this checkpoint (ours, a file or a run's folder, or upstream's) instead of random
    #: weights; a classifier of another class count is replaced by a new one (timm's ``reset_classifier``).
    finetune: str | None = None

    def validate(self, where: str) -> None:
        from spikingformer.models.registry import MODEL_CONFIGS, unknown_model

        if self.name not in MODEL_CONFIGS:
            raise ConfigError(f"{where + '.' if where else ''}name: {unknown_model(self.name)}")
        require(self.finetune is None or bool(self.finetune), where, "finetune", self.finetune,
                "a checkpoint path, or null to start from random weights")


@dataclass
class DataConfig(Section):
    """Where the data lives and how it is batched. ``batch_size`` is per device (per DDP rank)."""

    dataset: str = "synthetic"
    root: str | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    #: Global batch (per device x devices x accumulation) the recipe was run with upstream; the engine logs it
    #: beside the effective one (null: not recorded).
    recipe_global_batch: int | None = None
    num_workers: int = 2
    #: DVS: number of frames (T) each sample is integrated into; must equal the model's T.
    frames: int | None = None
    #: Train on / evaluate a seeded stratified subset of this many samples (synthetic: the set size).
    train_size: int | None = None
    eval_size: int | None = None
    #: Stop an epoch after this many batches (smoke runs); null = whole epoch.
    max_train_batches: int | None = None
    max_eval_batches: int | None = None

    def validate(self, where: str) -> None:
        require(self.dataset in DATASETS, where, "dataset", self.dataset, f"one of {list(DATASETS)}")
        require(self.batch_size >= 1, where, "batch_size", self.batch_size, ">= 1")
        require(self.num_workers >= 0, where, "num_workers", self.num_workers, ">= 0")
        optional = ("eval_batch_size", "recipe_global_batch", "frames", "train_size", "eval_size",
                    "max_train_batches", "max_eval_batches")
        for key in optional:
            value = getattr(self, key)
            require(value is None or value >= 1, where, key, value, "null or >= 1")


@dataclass
class OptimConfig(Section):
    """timm AdamW, SGD or LAMB (SDT); 1-D parameters (biases, BN) get no weight decay, as timm does."""

    opt: Literal["adamw", "sgd", "lamb"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.05
    eps: float = 1e-8
    momentum: float = 0.9
    #: Learning-rate rule for other global batches: 'none' (upstream) or 'linear' in global_batch/base_batch.
    lr_scaling: Literal["none", "linear"] = "none"
    base_batch: int | None = None
    grad_accum_steps: int = 1
    clip_grad: float | None = None

    def validate(self, where: str) -> None:
        require(self.lr > 0, where, "lr", self.lr, "> 0")
        require(self.weight_decay >= 0, where, "weight_decay", self.weight_decay, ">= 0")
        require(self.grad_accum_steps >= 1, where, "grad_accum_steps", self.grad_accum_steps, ">= 1")
        require(
            self.lr_scaling == "none" or (self.base_batch or 0) >= 1,
            where, "base_batch", self.base_batch, "an integer >= 1 when lr_scaling is 'linear'",
        )
        require(self.clip_grad is None or self.clip_grad > 0, where, "clip_grad", self.clip_grad, "null or > 0")


@dataclass
class ScheduleConfig(Section):
    """timm cosine schedule stepped per epoch; total epochs = epochs + cooldown_epochs."""

    sched: Literal["cosine", "constant"] = "cosine"
    epochs: int = 300
    warmup_epochs: int = 20
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    cooldown_epochs: int = 10
    #: timm's ``--sched-on-updates``: the schedule advances every optimizer update (MAE-style recipes such as
    #: QKFormer's ImageNet one) instead of once per epoch.
    sched_on_updates: bool = False
    #: MAE's half-cosine: the cosine spans the ``epochs - warmup_epochs`` after the warmup (timm's
    #: ``warmup_prefix``) instead of all ``epochs`` with the warmup inside them (timm's default).
    cosine_after_warmup: bool = False

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.cooldown_epochs

    def validate(self, where: str) -> None:
        require(self.epochs >= 1, where, "epochs", self.epochs, ">= 1")
        require(0 <= self.warmup_epochs <= self.epochs, where, "warmup_epochs", self.warmup_epochs, "0..epochs")
        require(self.warmup_lr >= 0, where, "warmup_lr", self.warmup_lr, ">= 0")
        require(self.min_lr >= 0, where, "min_lr", self.min_lr, ">= 0")
        require(self.cooldown_epochs >= 0, where, "cooldown_epochs", self.cooldown_epochs, ">= 0")


@dataclass
class AugmentConfig(Section):
    """Train-time augmentation and the loss's label smoothing, as each upstream training script sets them."""

    auto_augment: str | None = None
    hflip: float = 0.5
    re_prob: float = 0.0
    #: timm RandomErasing fill: constant 0, per-region random colour, or per-pixel noise.
    re_mode: Literal["const", "rand", "pixel"] = "const"
    re_count: int = 1
    #: timm's resize interpolation; 'random' picks bilinear or bicubic per training sample (eval: bilinear).
    interpolation: Literal["bilinear", "bicubic", "nearest", "box", "hamming", "lanczos", "random"] = "bicubic"
    #: Colour jitter strength; timm switches it off whenever ``auto_augment`` is set, as upstream ran it.
    color_jitter: float = 0.0
    #: RandomResizedCrop scale/ratio; (1, 1) + (1, 1) reproduces upstream's fixed centre square crop.
    scale: tuple[float, float] = (1.0, 1.0)
    ratio: tuple[float, float] = (1.0, 1.0)
    crop_pct: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    #: Epoch from which mixup/cutmix is switched off (null: never, where timm's command line says 0).
    mixup_off_epoch: int | None = None
    smoothing: float = 0.1
    #: DVS: SNNAugmentWide + flip on event frames.
    dvs_augment: bool = False
    #: TET loss (SDT's CIFAR10-DVS): the criterion on each time step's logits, averaged, mixed with weight
    #: ``tet_lamb`` with the MSE of the logits to ``tet_means``; null = the criterion on the time-averaged logits.
    #: Needs a model that returns per-step logits in training (``model.kwargs.tet: true``).
    tet_lamb: float | None = None
    tet_means: float = 1.0

    @property
    def mixup_active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def validate(self, where: str) -> None:
        for key in ("hflip", "re_prob", "mixup_prob", "mixup_switch_prob"):
            value = getattr(self, key)
            require(0.0 <= value <= 1.0, where, key, value, "a probability in [0, 1]")
        require(0.0 <= self.smoothing < 1.0, where, "smoothing", self.smoothing, "in [0, 1)")
        require(self.color_jitter >= 0.0, where, "color_jitter", self.color_jitter, ">= 0")
        require(self.re_count >= 1, where, "re_count", self.re_count, ">= 1")
        off = self.mixup_off_epoch
        require(off is None or off >= 1, where, "mixup_off_epoch", off, "null (never) or an epoch >= 1")
        lamb = self.tet_lamb
        require(lamb is None or 0.0 <= lamb <= 1.0, where, "tet_lamb", lamb, "null (no TET) or in [0, 1]")


@dataclass
class RuntimeConfig(Section):
    """Where and how a run executes; nothing here changes the recipe's mathematics except ``amp``."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Mixed precision on CUDA ('auto' = bf16 when supported, else fp16); always fp32 on CPU.
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    #: Evaluate under the same autocast too (timm's validate does); the upstream DVS scripts evaluate in fp32.
    amp_eval: bool = True
    channels_last: bool = False
    ema_decay: float | None = None
    #: Evaluate every N epochs (the last epoch is always evaluated).
    eval_every: int = 1
    #: Write last.pt every N epochs (the final epoch and every new best are always written).
    checkpoint_every: int = 1
    #: In-epoch checkpoints (``last.pt`` at an optimizer-update boundary, with the sampler's position, so a resumed
    #: run continues inside the epoch and equals the uninterrupted one): every N updates (null: not by count) ...
    checkpoint_every_updates: int | None = None
    #: ... and once this many minutes of training passed since the last checkpoint (null: not by time), so a kill
    #: loses at most about this much. A stop request (SIGTERM) checkpoints at the next update either way.
    checkpoint_every_minutes: float | None = 10.0
    #: LIF implementation (same spikes): spikingjelly's LIFNode, the fused operator (spikingformer.neurons.op), or
    #: 'auto' = fused where its exactness check passes on the run's device.
    lif_backend: Literal["auto", "spikingjelly", "fused"] = "auto"
    #: Train through torch.compile (Inductor; the fused LIF operator stays in its graph). Off by default: faster on
    #: CPU (1.1-1.2x, bench/bench_step.py) but not bit-identical to eager (README, runtime.compile).
    compile: bool = False

    def validate(self, where: str) -> None:
        ema_ok = self.ema_decay is None or 0.0 < self.ema_decay < 1.0
        require(ema_ok, where, "ema_decay", self.ema_decay, "null or in (0, 1)")
        require(self.eval_every >= 1, where, "eval_every", self.eval_every, ">= 1")
        require(self.checkpoint_every >= 1, where, "checkpoint_every", self.checkpoint_every, ">= 1")
        updates = self.checkpoint_every_updates
        require(updates is None or updates >= 1, where, "checkpoint_every_updates", updates, "null or >= 1")
        minutes = self.checkpoint_every_minutes
        require(minutes is None or minutes > 0, where, "checkpoint_every_minutes", minutes, "null or > 0")


@dataclass
class TrainConfig(Section):
    """Everything one training run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> TrainConfig:
        """Validate a plain mapping (e.g. parsed YAML); ``where`` prefixes error messages (file, row)."""
        return section_from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        frames = self.data.frames
        model_t = self.model.kwargs.get("T")
        if frames is not None and model_t is not None and frames != model_t:
            raise ConfigError(f"{where + '.' if where else ''}data.frames={frames} must equal model.kwargs.T={model_t}")
        tet_model = self.model.kwargs.get("tet", False)
        if (self.augment.tet_lamb is not None) != (tet_model is True):
            raise ConfigError(
                f"{where + '.' if where else ''}augment.tet_lamb={self.augment.tet_lamb} and model.kwargs.tet="
                f"{tet_model} disagree: the TET loss needs per-step logits (tet: true) and per-step logits need it"
            )
        if self.augment.mixup_active and self.data.batch_size % 2:
            raise ConfigError(
                f"{where + '.' if where else ''}data.batch_size={self.data.batch_size} must be even with mixup/cutmix "
                "(timm mixes each sample with its mirror in the batch)"
            )
