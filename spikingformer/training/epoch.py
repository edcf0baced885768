"""One epoch on one rank: the training steps and the evaluation pass, over what a run holds between epochs.

:func:`train_one_epoch` is the step loop every trainer runs (autocast, gradient accumulation, DDP's sync on
the last micro-batch only, clipping, the scheduler's per-update step, EMA); :func:`evaluate` the top-1/top-5
pass. ``spikingformer.training.engine`` builds the :class:`RunState` and strings epochs, checkpoints and callbacks
around them; the cost meter (``spikingformer.training.step_cost``) and the benchmarks time the same steps.
"""

from __future__ import annotations

import contextlib
import math
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from spikingformer.checkpoints.training import set_rng_state
from spikingformer.config import AugmentConfig, RuntimeConfig, TrainConfig
from spikingformer.training.distributed import all_reduce
from spikingformer.training.tet import TETLoss


def amp_dtype(runtime: RuntimeConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16/fp16 on CUDA per ``runtime.amp`` ('auto' = bf16 when supported), None (fp32) on CPU."""
    if device.type != "cuda" or runtime.amp == "none":
        return None
    if runtime.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if runtime.amp == "bf16" else torch.float16


def build_criterion(aug: AugmentConfig, num_classes: int) -> tuple[nn.Module, Mixup | None]:
    """Mixup/CutMix emit smoothed soft targets (SoftTargetCE); without them, label-smoothing CE.

    With ``aug.tet_lamb`` set, that criterion is applied per time step inside the TET loss.
    """
    criterion, mixup = _criterion(aug, num_classes)
    return (criterion if aug.tet_lamb is None else TETLoss(criterion, aug.tet_means, aug.tet_lamb)), mixup


def _criterion(aug: AugmentConfig, num_classes: int) -> tuple[nn.Module, Mixup | None]:
    if aug.mixup_active:
        mixup = Mixup(
            mixup_alpha=aug.mixup_alpha,
            cutmix_alpha=aug.cutmix_alpha,
            prob=aug.mixup_prob,
            switch_prob=aug.mixup_switch_prob,
            mode=aug.mixup_mode,
            label_smoothing=aug.smoothing,
            num_classes=num_classes,
        )
        return SoftTargetCrossEntropy(), mixup
    if aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(aug.smoothing), None
    return nn.CrossEntropyLoss(), None


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated since the epoch began. CPU: the process's peak resident set (lifetime)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for :func:`peak_memory_mb`: CUDA's allocator statistics; on a Linux CPU the process's
    resident high-water mark (``/proc/self/clear_refs``), so a long-lived process measures what comes next, not
    the largest thing it ever held. Elsewhere the lifetime peak stands."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@dataclass
class EpochPosition:
    """How far an epoch got: its batches trained on this rank (a whole number of updates), their summed loss and
    samples, the epoch's learning rate as logged, and its training seconds so far. Plain numbers: it travels in
    an in-epoch checkpoint."""

    batches: int = 0
    loss_sum: float = 0.0
    seen: float = 0.0
    lr: float | None = None
    train_time: float = 0.0


@dataclass
class RunState:
    """What one training run holds between epochs: its parts, where it stands, and what it has seen."""

    config: TrainConfig
    model: nn.Module
    net: nn.Module  # what trains: the model, under torch.compile when runtime.compile, in DDP when distributed
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    criterion: nn.Module
    mixup: Mixup | None
    device: torch.device
    dtype: torch.dtype | None
    train_loader: DataLoader
    eval_loader: DataLoader
    rank: int
    world: int
    global_batch: int
    #: What runs the model's neurons, in words (``describe_lif_backend``): resolved once, in ``set_up``.
    lif: str = ""
    num_updates: int = 0
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    #: (best top-1, its epoch) so far.
    best: tuple[float, int] = (-math.inf, -1)
    #: Where ``start_epoch`` resumes inside itself (an in-epoch checkpoint), and this rank's generator states at
    #: that step, put back once the epoch's batches are being drawn; None from an epoch's start.
    position: EpochPosition | None = None
    resume_rng: dict[str, Any] | None = None

    def autocast(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        on = enabled and self.dtype is not None
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=on) if on else contextlib.nullcontext()

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def train_batches(config: TrainConfig, loader: DataLoader) -> int:
    """Batches one epoch trains on this rank (``data.max_train_batches`` caps smoke runs)."""
    return min(len(loader), config.data.max_train_batches or len(loader))


def updates_per_epoch(config: TrainConfig, loader: DataLoader) -> int:
    """Optimizer updates in one epoch: the batches in groups of ``grad_accum_steps`` (the last may be short)."""
    return math.ceil(train_batches(config, loader) / config.optim.grad_accum_steps)


#: Called after every optimizer update with (batches trained so far this epoch, their loss sum on this rank as a
#: tensor, samples); it may write an in-epoch checkpoint or stop the run (``spikingformer.training.engine``).
Boundary = Callable[[int, torch.Tensor, float], None]


def train_one_epoch(
    run: RunState, loader: DataLoader, epoch: int, progress: bool, boundary: Boundary | None = None
) -> tuple[float, float]:
    """One pass over this rank's batches, from ``run.position`` when the epoch resumes part-way; returns (sum of
    sample losses, samples) on this rank, the resumed part included."""
    config = run.config
    run.net.train()
    if run.mixup is not None:
        off = config.augment.mixup_off_epoch
        run.mixup.mixup_enabled = off is None or epoch < off
    accum = config.optim.grad_accum_steps
    batches = train_batches(config, loader)
    position, run.position = run.position or EpochPosition(), None
    loss_sum = torch.tensor(position.loss_sum, dtype=torch.float64, device=run.device)
    seen = position.seen
    if position.batches:
        loader.sampler.skip(position.batches * loader.batch_size)  # those samples were trained on already
    run.optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, total=batches, initial=position.batches, desc=f"epoch {epoch}", leave=False,
               disable=None if progress else True)
    draws = iter(bar)  # the loader's own draw (its workers' base seed) happens here, as in an unbroken epoch
    if run.resume_rng is not None:
        set_rng_state(run.resume_rng, run.device)
        run.resume_rng = None
    for step, (x, y) in enumerate(draws, start=position.batches):
        if step == batches:
            break
        x, y = run.to_device(x, y)
        if run.mixup is not None:
            x, y = run.mixup(x, y)
        if config.runtime.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        update = (step + 1) % accum == 0 or step + 1 == batches
        group = min(accum, batches - step // accum * accum)  # micro-batches in this update; the last may be short
        skip_sync = isinstance(run.net, DistributedDataParallel) and not update
        with run.net.no_sync() if skip_sync else contextlib.nullcontext():
            with run.autocast():
                loss = run.criterion(run.net(x), y)
            run.scaler.scale(loss / group).backward()
        if update:
            if config.optim.clip_grad is not None:
                run.scaler.unscale_(run.optimizer)
                nn.utils.clip_grad_norm_(run.model.parameters(), config.optim.clip_grad)
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
            run.num_updates += 1
            run.scheduler.step_update(run.num_updates)
            if run.ema is not None:
                run.ema.update(run.model, step=run.num_updates)
        loss_sum += loss.detach().double() * len(x)
        seen += len(x)
        if update and boundary is not None:
            boundary(step + 1, loss_sum, seen)
    return float(loss_sum), float(seen)


@dataclass(frozen=True)
class EvalSums:
    """Evaluation totals on one rank (or, after :meth:`reduced`, over all ranks); NaN when not evaluated."""

    loss: float
    top1: float
    top5: float
    samples: float

    @classmethod
    def skipped(cls) -> EvalSums:
        return cls(math.nan, math.nan, math.nan, math.nan)

    def reduced(self, device: torch.device) -> EvalSums:
        """Summed over every rank (a collective: every rank calls it)."""
        return EvalSums(*all_reduce([self.loss, self.top1, self.top5, self.samples], device))

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Mean loss and top-1/top-5 in %; with a ``prefix`` (the EMA's), the accuracies only."""
        top = {f"{prefix}top1": 100 * self.top1 / self.samples, f"{prefix}top5": 100 * self.top5 / self.samples}
        return top if prefix else {"eval_loss": self.loss / self.samples, **top}


@torch.no_grad()
def evaluate(run: RunState, model: nn.Module, loader: DataLoader) -> EvalSums:
    """Summed CE loss, top-1 and top-5 hits and samples on this rank's shard."""
    model.eval()
    batches = run.config.data.max_eval_batches
    totals = torch.zeros(4, dtype=torch.float64, device=run.device)
    for step, (x, y) in enumerate(loader):
        if batches is not None and step == batches:
            break
        x, y = run.to_device(x, y)
        if run.config.runtime.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with run.autocast(run.config.runtime.amp_eval):
            logits = model(x).float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(y[:, None])
        totals[0] += F.cross_entropy(logits, y, reduction="sum")
        totals[1] += hits[:, 0].sum()
        totals[2] += hits.any(1).sum()
        totals[3] += len(y)
    return EvalSums(*totals.tolist())
