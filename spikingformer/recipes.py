"""The paper's training recipes (upstream's configs) as TrainConfig mappings: every value upstream trained with.

A paper row is ``deep_merge(load_recipe(name), row_overrides)`` validated by ``TrainConfig.from_dict``.
Named variants are the recipe plus the override that distinguishes a published row (``cifar10-400e``:
the "400E" rows; ``imagenet-8-768``: the 8-768 log's 24 x 8 batch; ``*-t10``: the T = 10 DVS rows).
``drop_path_rate`` is 0 everywhere: upstream passes 0.2 / 0.1 but never applies its DropPath (no block calls it).
"""

from __future__ import annotations

import copy
from typing import Any

from spikingformer._validation import deep_merge
from spikingformer.data import pixel_stats

# Lists, not tuples, so a recipe dumps to YAML / JSON as it is.
IMAGENET_MEAN, IMAGENET_STD = list(pixel_stats.IMAGENET_MEAN), list(pixel_stats.IMAGENET_STD)
CIFAR_MEAN, CIFAR_STD = list(pixel_stats.CIFAR_MEAN), list(pixel_stats.CIFAR_STD)

#: What every paper recipe shares: timm's train.py as upstream ran it (AdamW, cosine with 10 cooldown epochs,
#: fp16 AMP, no DropPath, no EMA), the square full-image crop, and mixup's batch mode with label smoothing.
BASE: dict[str, Any] = {
    "model": {"kwargs": {"T": 4, "drop_path_rate": 0.0}},
    "data": {"num_workers": 8},
    "optim": {"opt": "adamw", "eps": 1e-8, "lr_scaling": "none"},
    "schedule": {"sched": "cosine", "warmup_epochs": 20, "warmup_lr": 1e-5, "min_lr": 1e-5, "cooldown_epochs": 10},
    "augment": {"hflip": 0.5, "re_prob": 0.25, "re_mode": "const", "re_count": 1, "interpolation": "bicubic",
                "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "crop_pct": 1.0, "mixup_prob": 1.0,
                "mixup_switch_prob": 0.5, "mixup_mode": "batch", "smoothing": 0.1, "dvs_augment": False},
    "runtime": {"seed": 42, "amp": "fp16", "amp_eval": True, "ema_decay": None, "channels_last": False},
}

#: Spikingformer imagenet/: timm train.py + imagenet.yml, 8 GPUs x 36 (the 8-512 log: 4448 iter/epoch).
IMAGENET = deep_merge(BASE, {
    "model": {"name": "spikingformer_8_512", "kwargs": {"num_classes": 1000, "num_heads": 8}},
    "data": {"dataset": "imagenet", "batch_size": 36, "eval_batch_size": 36, "recipe_global_batch": 288},
    "optim": {"lr": 5e-4, "weight_decay": 0.05},
    "schedule": {"epochs": 300, "warmup_lr": 1e-6},
    "augment": {"auto_augment": "rand-m9-mstd0.5-inc1", "color_jitter": 0.4, "mean": IMAGENET_MEAN,
                "std": IMAGENET_STD, "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mixup_off_epoch": None},
})

#: Spikingformer cifar10/cifar10.yml, one GPU x 64. 300 epochs: the main-table 4-384 rows (issue #3); the yml says 400.
CIFAR10 = deep_merge(BASE, {
    "model": {"name": "spikingformer_cifar_4_384", "kwargs": {"num_classes": 10, "num_heads": 12}},
    "data": {"dataset": "cifar10", "batch_size": 64, "eval_batch_size": 64, "recipe_global_batch": 64},
    "optim": {"lr": 5e-4, "weight_decay": 0.06},
    "schedule": {"epochs": 300},
    "augment": {"auto_augment": "rand-m9-n1-mstd0.4-inc1", "color_jitter": 0.0, "mean": CIFAR_MEAN,
                "std": CIFAR_STD, "mixup_alpha": 0.5, "cutmix_alpha": 0.0, "mixup_off_epoch": 200},
})

#: Spikingformer cifar100/: cifar100.yml differs from CIFAR-10's only in the classes and 8 heads.
CIFAR100 = deep_merge(CIFAR10, {"model": {"kwargs": {"num_classes": 100, "num_heads": 8}},
                                "data": {"dataset": "cifar100"}})

#: Spikingformer cifar10-dvs/train.py (SEW-style), one GPU x 16, T = 16 frames, model from the factory defaults; no
#: RandAugment or erasing (its own DVS augmentation instead), mixup on half the batches.
CIFAR10_DVS = deep_merge(BASE, {
    "model": {"name": "spikingformer_dvs_2_256", "kwargs": {"num_classes": 10, "num_heads": 16, "T": 16,
                                                            "tau": 1.5}},
    "data": {"dataset": "cifar10-dvs", "frames": 16, "batch_size": 16, "eval_batch_size": 16, "num_workers": 4,
             "recipe_global_batch": 16},
    "optim": {"lr": 1e-3, "weight_decay": 0.06},
    "schedule": {"epochs": 96, "warmup_epochs": 10},
    "augment": {"auto_augment": None, "re_prob": 0.0, "dvs_augment": True, "mixup_alpha": 0.5, "cutmix_alpha": 0.0,
                "mixup_prob": 0.5, "mixup_off_epoch": 75},
    "runtime": {"seed": 2021, "amp_eval": False},
})

#: Spikingformer dvs128-gesture/: as CIFAR10-DVS with 11 classes and 192 cosine epochs.
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

# ---- Peers, each as its own upstream trained it (the repositories' confs)

#: SDT ImageNet (``conf/imagenet/8_384_300E_t4.yml``; timm 0.6.12 train.py): LAMB, mixup 0.2 / cutmix 1.0 switching,
#: crop_pct 0.95, no erasing. ``batch_size`` is per process; upstream states no GPU count (README: one process),
#: so the global batch is not recorded. DropPath 0.2 in the confs is never applied by the model (0 here).
SDT_IMAGENET: dict[str, Any] = {
    "model": {"name": "sdt_8_384", "kwargs": {"num_classes": 1000, "T": 4, "drop_path_rate": 0.0}},
    "data": {"dataset": "imagenet", "batch_size": 48, "eval_batch_size": 48, "num_workers": 8,
             "recipe_global_batch": None},
    "optim": {"opt": "lamb", "lr": 1.5e-3, "weight_decay": 0.01, "eps": 1e-6, "lr_scaling": "none"},
    "schedule": {"sched": "cosine", "epochs": 300, "warmup_epochs": 20, "warmup_lr": 1e-5, "min_lr": 1.5e-5,
                 "cooldown_epochs": 10},
    "augment": {"auto_augment": "rand-m5-mstd0.5-inc1", "hflip": 0.5, "color_jitter": 0.4,
                "re_prob": 0.0, "re_mode": "const", "re_count": 1, "interpolation": "bicubic",
                "scale": [0.2, 1.0], "ratio": [0.75, 4 / 3], "crop_pct": 0.95,
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mixup_prob": 0.6, "mixup_switch_prob": 0.5,
                "mixup_mode": "batch", "mixup_off_epoch": None, "smoothing": 0.1, "dvs_augment": False},
    "runtime": {"seed": 42, "amp": "fp16", "amp_eval": True, "ema_decay": None, "channels_last": False},
}
#: What the other ImageNet confs change (8-512's conf equals 8-384's but for the width).
_SDT_M7 = {"optim": {"lr": 1e-3}, "schedule": {"min_lr": 2e-5}, "augment": {"auto_augment": "rand-m7-mstd0.5-inc1"}}
_SDT_B36 = {"data": {"batch_size": 36, "eval_batch_size": 36}}
SDT_IMAGENET_ROWS = {
    "sdt-imagenet-8-384": SDT_IMAGENET,
    "sdt-imagenet-8-512": deep_merge(SDT_IMAGENET, {"model": {"name": "sdt_8_512"}}),
    "sdt-imagenet-6-512": deep_merge(SDT_IMAGENET, deep_merge(_SDT_M7, {
        "model": {"name": "sdt_6_512"}, "augment": {"scale": [0.08, 1.0]}})),
    "sdt-imagenet-10-512": deep_merge(SDT_IMAGENET, deep_merge(deep_merge(_SDT_M7, _SDT_B36), {
        "model": {"name": "sdt_10_512"}, "augment": {"mixup_prob": 0.75}})),
    "sdt-imagenet-8-768": deep_merge(SDT_IMAGENET, deep_merge(deep_merge(_SDT_M7, _SDT_B36), {
        "model": {"name": "sdt_8_768"}, "augment": {"scale": [0.08, 1.0], "mixup_prob": 1.0}})),
}

#: SDT CIFAR (``conf/cifar10/2_512_300E_t4.yml``): AdamW 3e-4, mixup 0.5 until epoch 200, no erasing, fp32.
SDT_CIFAR10: dict[str, Any] = deep_merge(CIFAR10, {
    "model": {"name": "sdt_cifar_2_512", "kwargs": {"num_classes": 10, "num_heads": 8, "T": 4}},
    "optim": {"lr": 3e-4},
    "schedule": {"warmup_lr": 1e-6},
    "augment": {"color_jitter": 0.5, "re_prob": 0.0},
    "runtime": {"amp": "none", "amp_eval": False},
})
#: ``conf/cifar100/2_512_300E_t4.yml``: the CIFAR-100 pixel statistics, otherwise CIFAR-10's conf.
SDT_CIFAR100 = deep_merge(SDT_CIFAR10, {
    "model": {"kwargs": {"num_classes": 100}}, "data": {"dataset": "cifar100"},
    "augment": {"mean": [0.5071, 0.4867, 0.4408], "std": [0.2675, 0.2565, 0.2761]},
})

#: SDT DVS128 Gesture (``conf/gesture/2_256_200E_t16.yml``): LAMB, no augmentation and no mixup, AMP.
SDT_DVS128: dict[str, Any] = {
    "model": {"name": "sdt_dvs_2_256", "kwargs": {"num_classes": 11, "T": 16, "drop_path_rate": 0.0}},
    "data": {"dataset": "dvs128-gesture", "frames": 16, "batch_size": 16, "eval_batch_size": 16, "num_workers": 4,
             "recipe_global_batch": 16},
    "optim": {"opt": "lamb", "lr": 3e-4, "weight_decay": 0.06, "eps": 1e-6, "lr_scaling": "none"},
    "schedule": {"sched": "cosine", "epochs": 200, "warmup_epochs": 10, "warmup_lr": 1e-6, "min_lr": 1e-5,
                 "cooldown_epochs": 10},
    "augment": {"auto_augment": None, "hflip": 0.0, "re_prob": 0.0, "dvs_augment": False, "mixup_alpha": 0.0,
                "cutmix_alpha": 0.0, "smoothing": 0.1},
    "runtime": {"seed": 42, "amp": "fp16", "amp_eval": True, "ema_decay": None, "channels_last": False},
}
#: SDT CIFAR10-DVS (``conf/cifar10-dvs/2_256_200E_t10_TET.yml``, the repo's only one: T=10): AdamW 7.5e-3, TET.
SDT_CIFAR10_DVS = deep_merge(SDT_DVS128, {
    "model": {"name": "sdt_cifar10dvs_2_256", "kwargs": {"num_classes": 10, "T": 10, "tet": True}},
    "data": {"dataset": "cifar10-dvs", "frames": 10, "batch_size": 32, "eval_batch_size": 32,
             "recipe_global_batch": 32},
    "optim": {"opt": "adamw", "lr": 7.5e-3, "weight_decay": 1e-4, "eps": 1e-8},
    "schedule": {"warmup_lr": 1e-3, "min_lr": 3e-4},
    "augment": {"tet_lamb": 0.001, "tet_means": 1.0},
})

#: Spikformer (ZK-Zhou/spikformer ``imagenet/imagenet.yml``, ``cifar10/cifar10.yml``): Spikingformer's recipes
#: (the same timm script and settings) but 24 images per GPU on ImageNet (8 V100s, Spikformer #12) and 128 on CIFAR;
#: its imagenet.yml sets no ``ratio``, so the script's default (3/4, 4/3) applies.
SPIKFORMER_IMAGENET = deep_merge(IMAGENET, {
    "model": {"name": "spikformer_8_384"},
    "data": {"batch_size": 24, "eval_batch_size": 24, "recipe_global_batch": 192},
    "augment": {"ratio": [0.75, 4 / 3]},
})
SPIKFORMER_CIFAR10 = deep_merge(CIFAR10, {
    "model": {"name": "spikformer_cifar_4_384"},
    "data": {"batch_size": 128, "eval_batch_size": 128, "recipe_global_batch": 128},
})
SPIKFORMER_CIFAR100 = deep_merge(SPIKFORMER_CIFAR10, {"model": {"kwargs": {"num_classes": 100}},
                                                     "data": {"dataset": "cifar100"}})

_T10 = {"model": {"kwargs": {"T": 10}}, "data": {"frames": 10}}

#: QKFormer ImageNet (``imagenet/train.py``, MAE's fine-tuning script; the Namespace dumps in its logs): AdamW at
#: 6e-4 x effective batch / 256 with no decay on 1-D parameters, 32 per GPU x 2 accumulated x 8 GPUs = 512
#: (lr 1.2e-3); a half-cosine to 1e-6 stepped per update over the 195 epochs after a 5-epoch linear warmup
#: from 0 (200 in all, no cooldown); RandAugment, pixel erasing, no mixup or cutmix, RRC (0.08, 1) bicubic;
#: eval Resize 256 -> centre crop 224; AMP in training and evaluation; seed 0. ``--drop_path 0.1`` never
#: reaches a block (0 here).
QKFORMER_IMAGENET: dict[str, Any] = {
    "model": {"name": "qkformer_10_384", "kwargs": {"num_classes": 1000, "T": 4, "drop_path_rate": 0.0}},
    "data": {"dataset": "imagenet", "batch_size": 32, "eval_batch_size": 32, "num_workers": 10,
             "recipe_global_batch": 512},
    "optim": {"opt": "adamw", "lr": 6e-4, "weight_decay": 0.05, "eps": 1e-8, "lr_scaling": "linear",
              "base_batch": 256, "grad_accum_steps": 2},
    "schedule": {"sched": "cosine", "epochs": 200, "warmup_epochs": 5, "warmup_lr": 0.0, "min_lr": 1e-6,
                 "cooldown_epochs": 0, "sched_on_updates": True, "cosine_after_warmup": True},
    "augment": {"auto_augment": "rand-m9-mstd0.5-inc1", "hflip": 0.5, "color_jitter": 0.0,
                "re_prob": 0.25, "re_mode": "pixel", "re_count": 1, "interpolation": "bicubic",
                "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3], "crop_pct": 224 / 256,
                "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
                "smoothing": 0.1, "dvs_augment": False},
    "runtime": {"seed": 0, "amp": "fp16", "amp_eval": True, "ema_decay": None, "channels_last": False},
}
QKFORMER_IMAGENET_ROWS = {
    "qkformer-imagenet-10-384": QKFORMER_IMAGENET,
    "qkformer-imagenet-10-512": deep_merge(QKFORMER_IMAGENET, {"model": {"name": "qkformer_10_512"}}),
    # the 64M log: 24 per GPU x 3 accumulated x 8 GPUs = 576 (lr 1.35e-3)
    "qkformer-imagenet-10-768": deep_merge(QKFORMER_IMAGENET, {
        "model": {"name": "qkformer_10_768"},
        "data": {"batch_size": 24, "eval_batch_size": 24, "recipe_global_batch": 576},
        "optim": {"grad_accum_steps": 3},
    }),
}

#: QKFormer CIFAR (``cifar10/cifar10.yml``, ``cifar100/cifar100.yml``): Spikingformer's CIFAR yml with lr 1e-3,
#: 400 epochs (+10 cooldown) and 8 heads; cifar100.yml keeps the CIFAR-10 mean and std.
QKFORMER_CIFAR10 = deep_merge(CIFAR10, {
    "model": {"name": "qkformer_cifar_4_384", "kwargs": {"num_classes": 10, "num_heads": 8}},
    "optim": {"lr": 1e-3},
    "schedule": {"epochs": 400},
})
QKFORMER_CIFAR100 = deep_merge(QKFORMER_CIFAR10, {"model": {"kwargs": {"num_classes": 100}},
                                                 "data": {"dataset": "cifar100"}})

#: QKFormer DVS (``cifar10-dvs/train.py``, ``dvs128-gesture/train.py`` defaults): Spikingformer's SEW-style DVS
#: script (mixup off from epoch 75) with tau 2.0; CIFAR10-DVS at lr 5e-3, DVS128 at 1e-3 to a 2e-5 floor.
QKFORMER_CIFAR10_DVS = deep_merge(CIFAR10_DVS, {
    "model": {"name": "qkformer_cifar10dvs_2_256", "kwargs": {"tau": 2.0}},
    "optim": {"lr": 5e-3},
})
QKFORMER_DVS128 = deep_merge(DVS128_GESTURE, {
    "model": {"name": "qkformer_dvs_2_256", "kwargs": {"tau": 2.0}},
    "schedule": {"min_lr": 2e-5},
})

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
    **SDT_IMAGENET_ROWS,
    "sdt-cifar10": SDT_CIFAR10,
    "sdt-cifar100": SDT_CIFAR100,
    "sdt-dvs128-gesture": SDT_DVS128,
    # conf/gesture/2_256_200E_t10.yml: LAMB 2e-3, weight decay 1e-4, warmup from 1e-5
    "sdt-dvs128-gesture-t10": deep_merge(SDT_DVS128, deep_merge(_T10, {
        "optim": {"lr": 2e-3, "weight_decay": 1e-4}, "schedule": {"warmup_lr": 1e-5}})),
    "sdt-cifar10-dvs": SDT_CIFAR10_DVS,
    "spikformer-imagenet": SPIKFORMER_IMAGENET,
    "spikformer-cifar10": SPIKFORMER_CIFAR10,
    "spikformer-cifar100": SPIKFORMER_CIFAR100,
    **QKFORMER_IMAGENET_ROWS,
    "qkformer-cifar10": QKFORMER_CIFAR10,
    "qkformer-cifar100": QKFORMER_CIFAR100,
    "qkformer-cifar10-dvs": QKFORMER_CIFAR10_DVS,
    "qkformer-cifar10-dvs-t10": deep_merge(QKFORMER_CIFAR10_DVS, _T10),
    "qkformer-dvs128-gesture": QKFORMER_DVS128,
    "qkformer-dvs128-gesture-t10": deep_merge(QKFORMER_DVS128, _T10),
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def load_recipe(name: str) -> dict[str, Any]:
    """A fresh copy of the named recipe (a TrainConfig mapping; safe to modify)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return copy.deepcopy(RECIPES[name])
