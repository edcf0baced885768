"""A tiny training configuration with every random part of the recipe on, and how runs compare and crash."""
from __future__ import annotations

from spikingformer.training.engine import TIMING_KEYS

TINY_MODEL = {"name": "spikingformer_cifar_2_384", "kwargs": {"embed_dim": 16, "depth": 1, "num_heads": 2, "T": 1}}
#: Digits subset with every random part of the recipe on: RandAugment, erasing, mixup/cutmix switching, EMA.
AUGMENTED = {
    "model": TINY_MODEL,
    "data": {"dataset": "digits", "batch_size": 16, "train_size": 96, "eval_size": 48, "num_workers": 0},
    "optim": {"lr": 2e-3},
    "schedule": {"epochs": 4, "warmup_epochs": 1, "warmup_lr": 1e-4, "cooldown_epochs": 0},
    "augment": {"auto_augment": "rand-m9-n1-mstd0.4-inc1", "re_prob": 0.25, "mixup_alpha": 0.5, "cutmix_alpha": 1.0,
                "mixup_off_epoch": 3},
    "runtime": {"seed": 7, "ema_decay": 0.9},
}


def untimed(history: list[dict]) -> list[dict]:
    """Histories without machine timings, NaN (epochs not evaluated) as None so they compare equal."""
    return [{k: None if v != v else v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


class Crash(Exception):
    pass
