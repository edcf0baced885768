"""The paper's training recipes (SPEC §6) as TrainConfig mappings: every value upstream trained with.

A paper row is ``deep_merge(load_recipe(name), row_overrides)`` validated by ``TrainConfig.from_dict``.
Named variants are the recipe plus the override that distinguishes a published row (``cifar10-400e``:
the "400E" rows; ``imagenet-8-768``: the 8-768 log's 24 x 8 batch; ``*-t10``: the T = 10 DVS rows).
``drop_path_rate`` is 0 everywhere: upstream passes 0.2 / 0.1 but never applies its DropPath (SPEC §2.1).
"""

from __future__ import annotations

import copy
from typing import Any

from spikingformer.config import deep_merge
from spikingformer.data.images import CIFAR_MEAN, CIFAR_STD

# Lists, not tuples, so a recipe dumps to YAML / JSON as it is.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

#: SPEC §6.1: timm train.py + imagenet.yml, 8 GPUs x 36 (the 8-512 log: 4448 iter/epoch).
IMAGENET: dict[str, Any] = {
    "model": {"name": "spikingformer_8_512", "kwargs": {"num_classes": 1000, "num_heads": 8, "T": 4,
                                                        "drop_path_rate": 0.0}},
    "data": {"dataset": "imagenet", "batch_size": 36, "eval_batch_size": 36, "num_workers": 8,
             "recipe_global_batch": 288},
    "optim": {"opt": "adamw", "lr": 5e-4, "weight_decay": 0.05, "eps": 1e-8, "lr_scaling": "none"},
    "schedule": {"sched": "cosine", "epochs": 300, "warmup_epochs": 20, "warmup_lr": 1e-6, "min_lr": 1e-5,
                 "cooldown_epochs": 10},
    "augment": {"auto_augment": "rand-m9-mstd0.5-inc1", "hflip": 0.5, "color_jitter": 0.4,
                "re_prob": 0.25, "re_mode": "const", "re_count": 1, "interpolation": "bicubic",
                "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "crop_pct": 1.0,
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5,
                "mixup_mode": "batch", "mixup_off_epoch": None, "smoothing": 0.1, "dvs_augment": False},
    "runtime": {"seed": 42, "amp": "fp16", "amp_eval": True, "ema_decay": None, "channels_last": False},
}

#: SPEC §6.2: cifar10.yml, one GPU x 64. 300 epochs: the main-table 4-384 rows (issue #3); the yml says 400.
CIFAR10: dict[str, Any] = {
    "model": {"name": "spikingformer_cifar_4_384", "kwargs": {"num_classes": 10, "num_heads": 12, "T": 4,
                                                              "drop_path_rate": 0.0}},
    "data": {"dataset": "cifar10", "batch_size": 64, "eval_batch_size": 64, "num_workers": 8,
             "recipe_global_batch": 64},
    "optim": {"opt": "adamw", "lr": 5e-4, "weight_decay": 0.06, "eps": 1e-8, "lr_scaling": "none"},
    "schedule": {"sched": "cosine", "epochs": 300, "warmup_epochs": 20, "warmup_lr": 1e-5, "min_lr": 1e-5,
                 "cooldown_epochs": 10},
    "augment": {"auto_augment": "rand-m9-n1-mstd0.4-inc1", "hflip": 0.5, "color_jitter": 0.0,
                "re_prob": 0.25, "re_mode": "const", "re_count": 1, "interpolation": "bicubic",
                "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "crop_pct": 1.0,
                "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD),
                "mixup_alpha": 0.5, "cutmix_alpha": 0.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5,
                "mixup_mode": "batch", "mixup_off_epoch": 200, "smoothing": 0.1, "dvs_augment": False},
    "runtime": {"seed": 42, "amp": "fp16", "amp_eval": True, "ema_decay": None, "channels_last": False},
}

#: SPEC §6.2: cifar100.yml differs from CIFAR-10's only in the classes and 8 heads.
CIFAR100 = deep_merge(CIFAR10, {"model": {"kwargs": {"num_classes": 100, "num_heads": 8}},
                                "data": {"dataset": "cifar100"}})

#: SPEC §6.3: the SEW-style DVS script, one GPU x 16, T = 16 frames, model from the factory defaults.
CIFAR10_DVS: dict[str, Any] = {
    "model": {"name": "spikingformer_dvs_2_256", "kwargs": {"num_classes": 10, "num_heads": 16, "T": 16,
                                                            "tau": 1.5, "drop_path_rate": 0.0}},
    "data": {"dataset": "cifar10-dvs", "frames": 16, "batch_size": 16, "eval_batch_size": 16, "num_workers": 4,
             "recipe_global_batch": 16},
    "optim": {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.06, "eps": 1e-8, "lr_scaling": "none"},
    "schedule": {"sched": "cosine", "epochs": 96, "warmup_epochs": 10, "warmup_lr": 1e-5, "min_lr": 1e-5,
                 "cooldown_epochs": 10},
    "augment": {"auto_augment": None, "hflip": 0.5, "re_prob": 0.0, "dvs_augment": True,
                "mixup_alpha": 0.5, "cutmix_alpha": 0.0, "mixup_prob": 0.5, "mixup_switch_prob": 0.5,
                "mixup_mode": "batch", "mixup_off_epoch": 75, "smoothing": 0.1},
    "runtime": {"seed": 2021, "amp": "fp16", "amp_eval": False, "ema_decay": None, "channels_last": False},
}

#: SPEC §6.3: as CIFAR10-DVS with 11 classes and 192 cosine epochs.
DVS128_GESTURE = deep_merge(CIFAR10_DVS, {"model": {"kwargs": {"num_classes": 11}},
                                          "data": {"dataset": "dvs128-gesture"}, "schedule": {"epochs": 192}})

#: Not a paper recipe: the tiny model on scikit-learn's digits, the embedded demo (>= 90 % top-1 on 2 CPU cores).
DIGITS: dict[str, Any] = {
    "model": {"name": "spikingformer_cifar_2_384", "kwargs": {"num_classes": 10, "embed_dim": 64, "depth": 1,
                                                              "num_heads": 4, "T": 2}},
    "data": {"dataset": "digits", "batch_size": 32, "eval_batch_size": 120, "num_workers": 0},
    "optim": {"opt": "adamw", "lr": 2e-3, "weight_decay": 0.05},
    "schedule": {"sched": "cosine", "epochs": 6, "warmup_epochs": 0, "min_lr": 1e-5, "cooldown_epochs": 0},
    "augment": {"hflip": 0.0, "smoothing": 0.1},
    "runtime": {"seed": 0, "device": "auto"},
}

_T10 = {"model": {"kwargs": {"T": 10}}, "data": {"frames": 10}}

RECIPES: dict[str, dict[str, Any]] = {
    "imagenet": IMAGENET,
    "imagenet-8-768": deep_merge(IMAGENET, {"model": {"name": "spikingformer_8_768"},
                                            "data": {"batch_size": 24, "eval_batch_size": 24,
                                                     "recipe_global_batch": 192}}),
    "cifar10": CIFAR10,
    "cifar10-400e": deep_merge(CIFAR10, {"schedule": {"epochs": 400}}),
    "cifar100": CIFAR100,
    "cifar100-400e": deep_merge(CIFAR100, {"schedule": {"epochs": 400}}),
    "cifar10-dvs": CIFAR10_DVS,
    "cifar10-dvs-t10": deep_merge(CIFAR10_DVS, _T10),
    "dvs128-gesture": DVS128_GESTURE,
    "dvs128-gesture-t10": deep_merge(DVS128_GESTURE, _T10),
    "digits": DIGITS,
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def load_recipe(name: str) -> dict[str, Any]:
    """A fresh copy of the named recipe (a TrainConfig mapping; safe to modify)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return copy.deepcopy(RECIPES[name])
