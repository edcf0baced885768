"""The training engine: one process or one DDP rank, epochs of train + eval, checkpoints and callbacks.

``fit(config)`` is all a caller needs. It joins the process group the launcher made (torchrun via
``spikingformer.train``, or Ray Train), else runs alone. Every epoch first reseeds python, numpy and torch
from (seed, rank, epoch), so an epoch's randomness (sampler order, RandAugment, mixup, erasing, worker
seeds) is a function of those three numbers: a run resumed from an epoch-end checkpoint equals the
uninterrupted run, on every rank. Checkpoints also carry every rank's generator states (gathered to rank 0,
each rank's put back on resume), so a checkpoint records where every generator stood; exactness comes from the
reseed at the next epoch's start, which overrides them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from spikingformer.config import AugmentConfig, RuntimeConfig, TrainConfig
from spikingformer.data import build_loaders
from spikingformer.distributed import (
    all_gather,
    all_reduce,
    broadcast_buffers,
    default_device,
    is_distributed,
    rank_and_world,
)
from spikingformer.models import build_model
from spikingformer.optim import build_optimizer, build_scheduler, scaled_lr
from spikingformer.train_checkpoint import (
    BEST,
    LAST,
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_sha256,
)

log = logging.getLogger(__name__)

#: How each reported figure was selected.
SELECTION = {
    "best_top1": "best test epoch (paper protocol)",
    "last_top1": "last epoch",
    "ema_top1": "EMA last epoch",
}
#: Per-epoch metrics that measure the machine, not the model (they differ between identical runs).
TIMING_KEYS = ("epoch_time_s", "img_per_s", "peak_mem_mb")
CHECKPOINT_FORMAT = 1


@dataclass
class FitResult:
    """The figures of one run, each labelled in ``selection`` with the protocol that picked it."""

    best_top1: float
    best_epoch: int
    last_top1: float
    ema_top1: float | None
    history: list[dict[str, float]]
    global_batch: int
    recipe_global_batch: int | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    data_info: dict[str, dict[str, Any]]
    #: ``state_sha256`` of the final weights on this rank (all ranks agree in a healthy DDP run).
    weights_sha256: str
    selection: dict[str, str] = field(default_factory=lambda: dict(SELECTION))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        out = dataclasses.asdict(self)
        for key in ("last_checkpoint", "best_checkpoint"):
            out[key] = str(out[key]) if out[key] else None
        return out


class Callback:
    """Hooks called on every rank; override the ones you need.

    ``on_epoch_end`` gets metrics already reduced across ranks (identical everywhere) and, on rank 0 when a
    checkpoint was written this epoch, its path (None otherwise).
    """

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        pass

    def on_fit_end(self, result: FitResult) -> None:
        pass


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Reseed python, numpy and torch (CPU and CUDA) from (seed, rank, epoch)."""
    state = int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)


def amp_dtype(runtime: RuntimeConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16/fp16 on CUDA per ``runtime.amp`` ('auto' = bf16 when supported), None (fp32) on CPU."""
    if device.type != "cuda" or runtime.amp == "none":
        return None
    if runtime.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if runtime.amp == "bf16" else torch.float16


def build_criterion(aug: AugmentConfig, num_classes: int) -> tuple[nn.Module, Mixup | None]:
    """Mixup/CutMix emit smoothed soft targets (SoftTargetCE); without them, label-smoothing CE."""
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


@dataclass
class _Run:
    """What one training run holds between epochs."""

    config: TrainConfig
    model: nn.Module
    net: nn.Module  # the DDP wrapper under torch.distributed, else the model itself
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    criterion: nn.Module
    mixup: Mixup | None
    device: torch.device
    dtype: torch.dtype | None
    num_updates: int = 0

    def autocast(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        on = enabled and self.dtype is not None
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=on) if on else contextlib.nullcontext()

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def train_one_epoch(run: _Run, loader: DataLoader, epoch: int, progress: bool) -> tuple[float, float]:
    """One pass over this rank's batches; returns (sum of sample losses, samples) on this rank."""
    config = run.config
    run.net.train()
    if run.mixup is not None:
        off = config.augment.mixup_off_epoch
        run.mixup.mixup_enabled = off is None or epoch < off
    accum = config.optim.grad_accum_steps
    batches = min(len(loader), config.data.max_train_batches or len(loader))
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    run.optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, total=batches, desc=f"epoch {epoch}", leave=False, disable=None if progress else True)
    for step, (x, y) in enumerate(bar):
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
            if run.ema is not None:
                run.ema.update(run.model, step=run.num_updates)
        loss_sum += loss.detach().double() * len(x)
        seen += len(x)
    return float(loss_sum), float(seen)


@torch.no_grad()
def evaluate(run: _Run, model: nn.Module, loader: DataLoader) -> list[float]:
    """[sum of CE losses, top-1 hits, top-5 hits, samples] on this rank's shard."""
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
    return totals.tolist()


def _eval_metrics(sums: list[float], prefix: str = "") -> dict[str, float]:
    loss, top1, top5, n = sums
    if prefix:
        return {f"{prefix}top1": 100 * top1 / n, f"{prefix}top5": 100 * top5 / n}
    return {"eval_loss": loss / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n}


def _checkpoint_state(
    run: _Run, epoch: int, best: tuple[float, int], history: list[dict], rng: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything a resumed run needs; ``rng`` holds each rank's generator states, in rank order."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.module.state_dict() if run.ema is not None else None,
        "num_updates": run.num_updates,
        "best_top1": best[0],
        "best_epoch": best[1],
        "history": history,
        "config": run.config.to_dict(),
        "seed": run.config.runtime.seed,
        "world_size": len(rng),
        "rng": rng,
    }


def _restore(run: _Run, ckpt: dict[str, Any], rank: int) -> None:
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {ckpt.get('format')!r} is not {CHECKPOINT_FORMAT}")
    if ckpt["seed"] != run.config.runtime.seed:
        raise ValueError(
            f"checkpoint was trained with runtime.seed={ckpt['seed']}, the config says {run.config.runtime.seed}: "
            "the resumed run would not continue the same run"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:
        if ckpt["ema"] is None:
            raise ValueError("the config asks for EMA but the checkpoint has none")
        run.ema.module.load_state_dict(ckpt["ema"])
    run.num_updates = ckpt["num_updates"]
    states = ckpt.get("rng") or []  # absent in checkpoints written before generator states were stored
    if rank < len(states):
        set_rng_state(states[rank], run.device)


def _on_disk(folder: Path | None, name: str, rank: int) -> Path | None:
    """The checkpoint file rank 0 sees in ``folder`` (from this call or the run it resumed), else None."""
    return folder / name if folder is not None and rank == 0 and (folder / name).is_file() else None


def fit(
    config: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``config`` for ``schedule.total_epochs`` epochs, evaluating and checkpointing as configured.

    ``device`` is this rank's device (a launcher that knows the local GPU passes it); by default
    ``runtime.device`` decides, rank r taking GPU r mod count. ``progress`` shows a per-epoch tqdm bar on rank 0
    when stderr is a terminal.
    """
    rank, world = rank_and_world()
    device = device or default_device(config.runtime.device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(config.runtime.seed)  # identical initial weights on every rank
    model = build_model(config.model.name, **config.model.kwargs).to(device)
    if config.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, eval_loader = build_loaders(config, rank=rank, world_size=world)
    global_batch = config.data.batch_size * world * config.optim.grad_accum_steps
    optimizer = build_optimizer(model, config.optim, scaled_lr(config.optim, global_batch))
    dtype = amp_dtype(config.runtime, device)
    criterion, mixup = build_criterion(config.augment, model.num_classes)
    run = _Run(
        config=config,
        model=model,
        net=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        ema=ModelEmaV3(model, decay=config.runtime.ema_decay) if config.runtime.ema_decay else None,
        criterion=criterion,
        mixup=mixup,
        device=device,
        dtype=dtype,
    )
    history: list[dict[str, float]] = []
    best = (-math.inf, -1)
    start = 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        _restore(run, ckpt, rank)
        history, best, start = ckpt["history"], (ckpt["best_top1"], ckpt["best_epoch"]), ckpt["epoch"] + 1
        if ckpt["world_size"] != world:
            log.warning("resuming a %d-rank run on %d ranks: batches will differ", ckpt["world_size"], world)
    if is_distributed():
        run.net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
        )
    recipe_batch = config.data.recipe_global_batch
    data_info = {"train": train_loader.dataset.info, "eval": eval_loader.dataset.info}
    if rank == 0:
        log.info(
            "%s on %s: %d rank(s) on %s, global batch %d (recipe %s, lr rule %r, lr %.3g), amp %s, epochs %d..%d",
            config.model.name, config.data.dataset, world, device, global_batch, recipe_batch,
            config.optim.lr_scaling, run.optimizer.param_groups[0]["initial_lr"], dtype, start,
            config.schedule.total_epochs - 1,
        )
        if recipe_batch is not None and recipe_batch != global_batch:
            log.warning("global batch %d differs from the recipe's %d", global_batch, recipe_batch)
        log.info("data: %s", data_info)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    total = config.schedule.total_epochs
    for epoch in range(start, total):
        seed_epoch(config.runtime.seed, rank, epoch)
        train_loader.sampler.set_epoch(epoch)
        run.scheduler.step(epoch)
        lr = run.optimizer.param_groups[0]["lr"]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        loss_sum, seen = train_one_epoch(run, train_loader, epoch, progress and rank == 0)
        train_time = time.perf_counter() - began
        last_epoch = epoch == total - 1
        sums = [math.nan] * 8
        if (epoch + 1) % config.runtime.eval_every == 0 or last_epoch:
            broadcast_buffers(model)
            sums = evaluate(run, model, eval_loader)
            if run.ema is not None:
                broadcast_buffers(run.ema.module)
                sums += evaluate(run, run.ema.module, eval_loader)
            else:
                sums += [math.nan] * 4
        epoch_time = time.perf_counter() - began
        loss_sum, seen, *sums = all_reduce([loss_sum, seen, *sums], device)
        train_time, epoch_time, peak = all_reduce([train_time, epoch_time, peak_memory_mb(device)], device, op="max")
        metrics: dict[str, float] = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            **_eval_metrics(sums[:4]),
            "lr": lr,
            "epoch_time_s": epoch_time,
            "img_per_s": seen / train_time,
            "peak_mem_mb": peak,
            "global_batch": global_batch,
        }
        if run.ema is not None:
            metrics.update(_eval_metrics(sums[4:], prefix="ema_"))
        if not math.isfinite(metrics["train_loss"]):
            raise FloatingPointError(f"epoch {epoch}: training loss is {metrics['train_loss']}")
        history.append(metrics)
        improved = metrics["top1"] > best[0]  # False for NaN: epochs without evaluation
        if improved:
            best = (metrics["top1"], epoch)
        written = None
        due = (epoch + 1) % config.runtime.checkpoint_every == 0 or last_epoch or improved
        rng = all_gather(rng_state(device)) if due else []  # collective: ``due`` is the same on every rank
        if checkpoint_dir is not None and rank == 0 and due:
            written = save_checkpoint(_checkpoint_state(run, epoch, best, history, rng), checkpoint_dir / LAST)
            if improved:
                copy_checkpoint(written, checkpoint_dir / BEST)
        for callback in callbacks:
            callback.on_epoch_end(dict(metrics), written)
    evaluated = [h for h in history if not math.isnan(h["top1"])]
    result = FitResult(
        best_top1=best[0],
        best_epoch=best[1],
        last_top1=evaluated[-1]["top1"] if evaluated else math.nan,
        ema_top1=evaluated[-1]["ema_top1"] if evaluated and run.ema is not None else None,
        history=history,
        global_batch=global_batch,
        recipe_global_batch=recipe_batch,
        last_checkpoint=_on_disk(checkpoint_dir, LAST, rank),
        best_checkpoint=_on_disk(checkpoint_dir, BEST, rank),
        data_info=data_info,
        weights_sha256=state_sha256(model.state_dict()),
    )
    for callback in callbacks:
        callback.on_fit_end(result)
    return result
