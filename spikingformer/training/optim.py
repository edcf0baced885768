"""Optimizer and LR schedule exactly as upstream's timm recipe: AdamW without decay on 1-D params, per-epoch cosine
(or, for MAE-style recipes, a half-cosine stepped per update after a prefix warmup).

timm's cosine runs on the raw epoch index with the warmup inside it (``warmup_prefix=False``): with
t_initial = epochs the LR at epoch 150 of ImageNet's recipe is 1e-5 + (5e-4 - 1e-5) / 2 = 2.55e-4, then
``cooldown_epochs`` follow at min_lr. The schedule is stepped once per epoch with the epoch index.
"""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn

from spikingformer.config import OptimConfig, ScheduleConfig


def scaled_lr(optim: OptimConfig, global_batch: int) -> float:
    """The base LR after the configured rule: 'none' keeps it (upstream), 'linear' scales by global/base batch."""
    if optim.lr_scaling == "linear":
        return optim.lr * global_batch / optim.base_batch
    return optim.lr


def build_optimizer(model: nn.Module, optim: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """timm's factory: biases, BN and other 1-D parameters go to a group without weight decay."""
    return create_optimizer_v2(
        model, opt=optim.opt, lr=lr, weight_decay=optim.weight_decay, eps=optim.eps, momentum=optim.momentum
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, updates_per_epoch: int = 0
) -> Scheduler:
    """timm schedule covering ``schedule.total_epochs``: per epoch, or per optimizer update when
    ``schedule.sched_on_updates`` (then ``updates_per_epoch`` converts epochs to updates, as timm does).

    The engine calls ``step(epoch)`` at every epoch start and ``step_update(num_updates)`` after every
    update; timm ignores whichever does not match the schedule's unit.
    """
    if schedule.sched_on_updates and updates_per_epoch < 1:
        raise ValueError(f"schedule.sched_on_updates needs the updates per epoch, got {updates_per_epoch}")
    cosine = schedule.epochs - schedule.warmup_epochs if schedule.cosine_after_warmup else schedule.epochs
    if cosine < 1:
        raise ValueError(
            f"schedule.cosine_after_warmup: schedule.epochs={schedule.epochs} leaves no epoch after "
            f"schedule.warmup_epochs={schedule.warmup_epochs}"
        )
    scheduler, total = create_scheduler_v2(
        optimizer,
        sched=schedule.sched,
        num_epochs=cosine,
        warmup_epochs=schedule.warmup_epochs,
        warmup_lr=schedule.warmup_lr,
        warmup_prefix=schedule.cosine_after_warmup,
        min_lr=schedule.min_lr,
        cooldown_epochs=schedule.cooldown_epochs,
        step_on_epochs=not schedule.sched_on_updates,
        updates_per_epoch=updates_per_epoch if schedule.sched_on_updates else 0,
    )
    if schedule.sched == "cosine" and total != schedule.total_epochs:
        raise RuntimeError(f"timm schedules {total} epochs, the config {schedule.total_epochs}")
    return scheduler
