"""Training throughput and peak memory through the real engine (``fit``) on synthetic data.

Three epochs per configuration; throughput is the best of epochs 2 and 3 (the first pays for warm-up; best-of
damps other processes' load on a shared machine). On CPU the memory figure is the process's peak resident set
(about 0.9 GB of it is the imported CUDA build of torch), so configurations run smallest first.
"""

from __future__ import annotations

import torch

from spikingformer.config import TrainConfig
from spikingformer.engine import fit
from spikingformer.recipes import load_recipe

#: (label, model section, per-device batch, timed batches)
CONFIGS = [
    ("tiny (digits demo: D64 L1 h4 T2)", load_recipe("digits")["model"], 32, 12),
    ("spikingformer_cifar_4_384 (T4)", {"name": "spikingformer_cifar_4_384", "kwargs": {"T": 4}}, 8, 4),
]


def measure(model: dict, batch: int, batches: int) -> dict[str, float]:
    config = TrainConfig.from_dict({
        "model": model,
        "data": {"dataset": "synthetic", "batch_size": batch, "train_size": batch * batches, "eval_size": batch,
                 "num_workers": 0},
        "schedule": {"epochs": 3, "warmup_epochs": 0, "cooldown_epochs": 0},
        "augment": {"mixup_alpha": 0.8},
    })
    timed = fit(config).history[1:]
    return {"img_per_s": max(h["img_per_s"] for h in timed), "peak_mem_mb": timed[-1]["peak_mem_mb"]}


def run() -> list[dict]:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for label, model, batch, batches in CONFIGS:
        metrics = measure(model, batch, batches)
        context = {"model": model["name"], "batch": batch, "device": device, "steps": batches}
        rows.append({"name": f"train {label} batch {batch}", "value": metrics["img_per_s"], "unit": "img/s",
                     **context})
        rows.append({"name": f"train peak memory {label}", "value": metrics["peak_mem_mb"], "unit": "MB",
                     **context})
    return rows
