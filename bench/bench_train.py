"""Training throughput and peak memory through the real engine (``fit``) with each recipe's batch and augmentation.

CIFAR 4-384 runs the cifar10 recipe (per-device batch 64, RandAugment, random erasing, mixup, fp16 AMP on CUDA)
on random pixels written in the CIFAR-10 python layout, so the recipe's real input pipeline runs; on CPU it
uses batch 16, named in the row (batch 64 needs over 13 GB of activations there). The tiny model runs the
digits recipe on scikit-learn's digits. Three epochs each, of enough batches that the DataLoader's start-up in
each epoch does not dominate the figure; throughput is the best of epochs 2 and 3 (the first pays for warm-up;
best-of damps other processes' load on a shared machine). On CPU the memory figure is the process's peak
resident set (about 0.9 GB of it is the imported CUDA build of torch), so configurations run smallest first.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from spikingformer._validation import deep_merge
from spikingformer.config import TrainConfig
from spikingformer.recipes import load_recipe
from spikingformer.training.distributed import default_device
from spikingformer.training.engine import fit
from spikingformer.training.epoch import amp_dtype

#: (label, recipe, timed batches per epoch, per-device batch on CPU: None = the recipe's)
CONFIGS = [
    ("tiny (digits demo: D64 L1 h4 T2)", "digits", 12, None),
    ("spikingformer_cifar_4_384 (T4)", "cifar10", 6, 16),
]


def fake_cifar10(root: Path, images: int) -> None:
    """Random pixels and cycling labels in the CIFAR-10 python layout (5 train batches, a test batch, the meta)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_file = -(-images // 5)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({"data": pixels, "labels": [i % 10 for i in range(per_file)]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def config_for(recipe: str, steps: int, root: str | None, batch: int | None) -> TrainConfig:
    """The recipe, cut to ``steps`` batches per epoch and one evaluation batch, with at most one worker per core."""
    base = load_recipe(recipe)
    batch = batch or base["data"]["batch_size"]
    return TrainConfig.from_dict(deep_merge(base, {
        "data": {"root": root, "batch_size": batch, "eval_batch_size": batch, "train_size": batch * steps,
                 "eval_size": batch, "max_eval_batches": 1,
                 "num_workers": min(base["data"]["num_workers"], os.cpu_count() or 1)},
        "schedule": {"epochs": 3, "warmup_epochs": 0, "cooldown_epochs": 0},
    }))


def run() -> list[dict]:
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(0) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as root:
        for label, recipe, steps, cpu_batch in CONFIGS:
            config = config_for(recipe, steps, root if recipe == "cifar10" else None, None if cuda else cpu_batch)
            if recipe == "cifar10":
                fake_cifar10(Path(root), config.data.train_size)
            timed = fit(config).history[1:]
            dtype = amp_dtype(config.runtime, default_device(config.runtime.device))
            batch, recipe_batch = config.data.batch_size, load_recipe(recipe)["data"]["batch_size"]
            context = {"model": config.model.name, "recipe": recipe, "batch": batch, "recipe_batch": recipe_batch,
                       "device": device_name, "amp": str(dtype).removeprefix("torch.") if dtype else "fp32",
                       "steps": steps, "workers": config.data.num_workers,
                       "augment": config.augment.auto_augment or "none"}
            batch_tag = f"batch {batch}" + (f" (recipe {recipe_batch}: CPU memory)" if batch != recipe_batch else "")
            tag = f"{label} {batch_tag} {context['amp']}"
            rows.append({"name": f"train {tag}", "value": max(h["img_per_s"] for h in timed), "unit": "img/s",
                         **context})
            rows.append({"name": f"train peak memory {tag}", "value": timed[-1]["peak_mem_mb"], "unit": "MB",
                         **context})
    return rows
