"""QKFormer's recipes as upstream trained each row, and the engine's per-update half-cosine schedule they need."""

from __future__ import annotations

import math

import pytest
import torch

from spikingformer.config import TrainConfig
from spikingformer.recipes import load_recipe
from spikingformer.training.engine import fit
from spikingformer.training.optim import build_optimizer, build_scheduler, scaled_lr


def mae_lr(t: float, lr: float, min_lr: float, warmup: int, epochs: int) -> float:
    """MAE's ``adjust_learning_rate`` at fractional epoch ``t``: linear warmup from 0, then a half-cosine."""
    if t < warmup:
        return lr * t / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))


def recipe(name: str) -> TrainConfig:
    return TrainConfig.from_dict(load_recipe(name), name)


@pytest.mark.parametrize("name,global_batch,lr", [("qkformer-imagenet-10-384", 512, 1.2e-3),
                                                  ("qkformer-imagenet-10-768", 576, 1.35e-3)])
def test_imagenet_lr_follows_mae_per_update(name: str, global_batch: int, lr: float) -> None:
    """lr = 6e-4 x effective batch / 256 on 8 GPUs, then MAE's rule at every optimizer update of 200 epochs."""
    config = recipe(name)
    assert config.data.batch_size * 8 * config.optim.grad_accum_steps == global_batch == config.data.recipe_global_batch
    assert scaled_lr(config.optim, global_batch) == pytest.approx(lr)
    assert config.schedule.total_epochs == 200
    updates = 13  # per epoch (upstream: 2502 and 2224); the schedule is a function of updates / updates per epoch
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config.optim, lr)
    scheduler = build_scheduler(optimizer, config.schedule, updates)
    for update in range(200 * updates):
        scheduler.step_update(update)
        expected = mae_lr(update / updates, lr, 1e-6, 5, 200)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), update
    decay = {group["weight_decay"]: [p.ndim for p in group["params"]] for group in optimizer.param_groups}
    assert decay == {0.0: [1], 0.05: [2]}  # no weight decay on 1-D parameters


def test_per_update_schedule_needs_the_updates_per_epoch_and_a_cosine() -> None:
    config = recipe("qkformer-imagenet-10-384")
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config.optim, 1e-3)
    with pytest.raises(ValueError, match="sched_on_updates"):
        build_scheduler(optimizer, config.schedule)
    warmup_only = TrainConfig.from_dict({"schedule": {"epochs": 5, "warmup_epochs": 5, "cosine_after_warmup": True}})
    with pytest.raises(ValueError, match="epochs=5 leaves no epoch after schedule.warmup_epochs=5"):
        build_scheduler(optimizer, warmup_only.schedule)


@pytest.mark.train
def test_fit_steps_the_lr_every_update_with_accumulation() -> None:
    """A real run: 6 batches in groups of 2 = 3 updates an epoch, 1 warmup epoch then a 2-epoch cosine."""
    config = TrainConfig.from_dict({
        "model": {"name": "qkformer_cifar_4_384", "kwargs": {"embed_dim": 16, "depth": 3, "num_heads": 2, "T": 1}},
        "data": {"dataset": "digits", "batch_size": 4, "train_size": 24, "eval_size": 8, "num_workers": 0},
        "optim": {"lr": 2e-3, "grad_accum_steps": 2},
        "schedule": {"epochs": 3, "warmup_epochs": 1, "warmup_lr": 0.0, "min_lr": 1e-5, "cooldown_epochs": 0,
                     "sched_on_updates": True, "cosine_after_warmup": True},
        "augment": {"hflip": 0.0},
        "runtime": {"seed": 0, "device": "cpu"},
    })
    result = fit(config)
    starts = [h["lr"] for h in result.history]
    assert starts == pytest.approx([mae_lr(e, 2e-3, 1e-5, 1, 3) for e in range(3)])
    assert starts[1] == pytest.approx(2e-3) and 1e-5 < starts[2] < 2e-3


def test_cifar_and_dvs_recipes_carry_the_upstream_values() -> None:
    c10, c100 = recipe("qkformer-cifar10"), recipe("qkformer-cifar100")
    for cfg, classes in ((c10, 10), (c100, 100)):
        assert (cfg.model.name, cfg.model.kwargs["num_heads"], cfg.model.kwargs["num_classes"]) == (
            "qkformer_cifar_4_384", 8, classes)
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.data.batch_size) == (1e-3, 0.06, 64)
        assert (cfg.schedule.epochs, cfg.schedule.cooldown_epochs, cfg.schedule.warmup_epochs) == (400, 10, 20)
        assert (cfg.augment.mixup_alpha, cfg.augment.mixup_off_epoch, cfg.augment.re_mode) == (0.5, 200, "const")
        assert cfg.augment.mean == (0.4914, 0.4822, 0.4465)  # cifar100.yml keeps CIFAR-10's statistics
        assert not cfg.schedule.sched_on_updates
    dvs, gesture = recipe("qkformer-cifar10-dvs"), recipe("qkformer-dvs128-gesture")
    assert (dvs.optim.lr, dvs.schedule.min_lr, dvs.schedule.total_epochs) == (5e-3, 1e-5, 106)
    assert (gesture.optim.lr, gesture.schedule.min_lr, gesture.schedule.total_epochs) == (1e-3, 2e-5, 202)
    for cfg in (dvs, gesture):
        assert cfg.model.kwargs["tau"] == 2.0 and cfg.model.kwargs["T"] == cfg.data.frames == 16
        assert (cfg.augment.mixup_prob, cfg.augment.mixup_off_epoch, cfg.augment.dvs_augment) == (0.5, 75, True)
    assert recipe("qkformer-cifar10-dvs-t10").model.kwargs["T"] == 10
    imagenet = recipe("qkformer-imagenet-10-512")
    assert (imagenet.augment.mixup_alpha, imagenet.augment.cutmix_alpha, imagenet.augment.re_mode) == (0, 0, "pixel")
    assert imagenet.augment.scale == (0.08, 1.0) and imagenet.augment.crop_pct == pytest.approx(0.875)
    assert (imagenet.schedule.warmup_lr, imagenet.schedule.min_lr, imagenet.runtime.seed) == (0.0, 1e-6, 0)
