"""How much QKFormer's batch-coupled neuron moves its figures: top-1 and spikes per image by eval batch and variant.

Upstream's last-stage ``proj_lif`` steps over ``T*B`` (``QKFormer(batch_coupled_proj_lif=True)``, the default), so
a sample's output depends on the other samples of its batch. A tiny QKFormer of the CIFAR layout (D 64, 3 blocks,
T 4, 16x16 input) trains coupled at batch 32 on scikit-learn's digits (the demo's data, 1437 train / 360 test
images; CPU, about a minute), then evaluates the same weights coupled at eval batch 1, 2, 16, 64 and the whole test
set in one batch, and per-sample (``batch_coupled_proj_lif=False``, whose figures do not depend on the batch). At
batch 1 both neurons compute the same thing.
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from spikingformer._validation import deep_merge
from spikingformer.checkpoints.loading import load_weights, read_checkpoint
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import build_eval_dataset
from spikingformer.models import build_model
from spikingformer.neurons import MultiStepLIF, set_lif_backend
from spikingformer.recipes import load_recipe
from spikingformer.training.engine import fit

MODEL = {"name": "qkformer_cifar_4_384", "kwargs": {"num_classes": 10, "embed_dim": 64, "depth": 3, "num_heads": 4,
                                                    "T": 4, "img_size": 16}}
TRAIN_BATCH = 32
EPOCHS = 8
EVAL_BATCHES = (1, 2, 16, 64, None)  # None: the whole test set in one batch


def evaluate(model: nn.Module, dataset: Dataset, batch: int) -> tuple[float, float]:
    """Top-1 (%) and spikes per image (every LIF call of every layer) over ``dataset`` in order, at ``batch``."""
    spikes = torch.zeros((), dtype=torch.float64)

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        spikes.add_(output.sum(dtype=torch.float64))

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, MultiStepLIF)]
    correct = images = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch, shuffle=False):
            correct += int((model(x).argmax(1) == y).sum())
            images += len(y)
    for hook in hooks:
        hook.remove()
    return 100.0 * correct / images, float(spikes) / images


def run() -> list[dict]:
    config = TrainConfig.from_dict(deep_merge(load_recipe("digits"), {
        "model": MODEL,
        "data": {"batch_size": TRAIN_BATCH},
        "schedule": {"epochs": EPOCHS},
        "runtime": {"device": "cpu", "amp": "none", "lif_backend": "fused"},
    }))
    dataset = build_eval_dataset(config)
    with tempfile.TemporaryDirectory(prefix="bench-coupling-") as folder:
        start = time.perf_counter()
        result = fit(config, checkpoint_dir=folder)
        train_s = time.perf_counter() - start
        models = {}
        for coupled in (True, False):
            model = build_model(MODEL["name"], **MODEL["kwargs"], batch_coupled_proj_lif=coupled).eval()
            load_weights(model, read_checkpoint(result.last_checkpoint))
            set_lif_backend(model, "fused", "cpu")
            models["coupled" if coupled else "per-sample"] = model
    context = {"model": f"{MODEL['name']} {MODEL['kwargs']}", "data": "digits test (360 images)",
               "train": f"coupled, batch {TRAIN_BATCH}, {EPOCHS} epochs, {train_s:.0f} s, last top-1 "
                        f"{result.last_top1:.2f}", "device": "cpu"}
    rows = []
    for variant, model in models.items():
        for batch in EVAL_BATCHES if variant == "coupled" else (1, 64):
            size = batch or len(dataset)
            top1, spikes = evaluate(model, dataset, size)
            label = f"{variant}, eval batch {size}"
            rows.append({"name": f"top-1 ({label})", "value": top1, "unit": "%", **context})
            rows.append({"name": f"spikes per image ({label})", "value": spikes, "unit": "spikes", **context})
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['value']:.6g} {row['unit']}")
