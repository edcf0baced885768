"""Optimizer and LR schedule exactly as upstream's timm recipe: AdamW without decay on 1-D params, per-epoch cosine.

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


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: ScheduleConfig) -> Scheduler:
    """Per-epoch timm schedule covering ``schedule.total_epochs`` (epochs + cooldown)."""
    scheduler, total = create_scheduler_v2(
        optimizer,
        sched=schedule.sched,
        num_epochs=schedule.epochs,
        warmup_epochs=schedule.warmup_epochs,
        warmup_lr=schedule.warmup_lr,
        min_lr=schedule.min_lr,
        cooldown_epochs=schedule.cooldown_epochs,
    )
    if schedule.sched == "cosine" and total != schedule.total_epochs:
        raise RuntimeError(f"timm schedules {total} epochs, the config {schedule.total_epochs}")
    return scheduler
