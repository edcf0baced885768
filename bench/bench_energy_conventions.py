"""Every family's smallest CIFAR model, trained briefly, under every energy convention: does it save energy at all?

Each model is trained from scratch for ``EPOCHS`` epoch(s) on scikit-learn's digits at 32x32 (the data set that
is on every machine; CIFAR-10 is not), then measured: energy per image under its paper's convention and the common
ruler (compute only: 4.6 pJ per MAC, 0.9 pJ per AC), and memory-inclusive (``spikingformer.energy.memory``) for
the spiking model and for its bit-matched quantized ANN, with the firing rate measured and the firing rate at which
the two cost the same. CPU, fp32; minutes. The figures describe briefly trained models on a small data set: the
rates of a converged CIFAR model differ, and the break-even rate is the figure to compare it with.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time

from spikingformer.config import TrainConfig
from spikingformer.evaluate import COMMON, ENERGY_MJ, FIRING_RATE_MEAN, evaluate_run, figure
from spikingformer.recipes import load_recipe
from spikingformer.training.engine import fit

#: Each family's smallest CIFAR configuration (parameters with 10 classes).
MODELS = {
    "Spikingformer": ("spikingformer_cifar_4_256", {}),
    "Spikformer": ("spikformer_cifar_4_256", {}),
    "Spike-driven Transformer": ("sdt_cifar_2_512", {}),
    "QKFormer": ("qkformer_cifar_4_384", {"num_heads": 8}),
}
EPOCHS, TRAIN_IMAGES, EVAL_IMAGES, ENERGY_BATCHES, MEMORY_IMAGES = 1, 256, 60, 1, 2


def _config(model: str, kwargs: dict) -> TrainConfig:
    mapping = copy.deepcopy(load_recipe("digits"))
    mapping["model"] = {"name": model, "kwargs": {"num_classes": 10, **kwargs}}
    mapping["data"].update({"train_size": TRAIN_IMAGES, "eval_size": EVAL_IMAGES, "eval_batch_size": EVAL_IMAGES})
    mapping["schedule"]["epochs"] = EPOCHS
    mapping["runtime"].update({"device": "cpu", "amp": "none"})
    return TrainConfig.from_dict(mapping, where=f"bench {model}")


def run() -> list[dict]:
    rows = []
    for family, (model_name, kwargs) in MODELS.items():
        config = _config(model_name, kwargs)
        with tempfile.TemporaryDirectory(prefix="bench-energy-") as folder:
            began = time.perf_counter()
            result = fit(config, checkpoint_dir=folder)
            trained = time.perf_counter() - began
            final = evaluate_run(config, result, energy_batches=ENERGY_BATCHES, memory_images=MEMORY_IMAGES)
        figures, memory = final.metrics, final.memory
        context = {"family": family, "model": model_name, "T": memory.time_steps, "epochs": EPOCHS,
                   "train_images": TRAIN_IMAGES, "best_top1": result.best_top1, "train_s": round(trained, 1),
                   "device": "cpu", "memory_images": memory.images}  # fmt: skip
        for name, value, unit, convention in (
            ("energy_paper_convention", figures[ENERGY_MJ], "mJ", "the family's paper convention (compute only)"),
            ("energy_common", figures[figure(ENERGY_MJ, COMMON)], "mJ", "common ruler (compute only)"),
            ("energy_memory_inclusive", memory.snn_mJ, "mJ", "memory-inclusive, spiking model"),
            ("energy_memory_inclusive_silent", memory.snn_silent_mJ, "mJ", "memory-inclusive, every neuron silent"),
            ("energy_quantized_ann", memory.ann_mJ, "mJ", f"memory-inclusive, {memory.ann_bits}-bit quantized ANN"),
            ("firing_rate_mean", figures.get(FIRING_RATE_MEAN, math.nan), "rate", "mean of the LIF layers' rates"),
            ("firing_rate_spikes", memory.firing_rate, "rate", "spikes / neuron outputs, all layers"),
            ("break_even_rate", _or_nan(memory.break_even_rate), "rate", "memory-inclusive: SNN = quantized ANN"),
        ):
            rows.append({"name": f"{name}:{family}", "value": value, "unit": unit, "convention": convention,
                         **context})
        print(f"{family}: {json.dumps(rows[-8:])}", flush=True)  # each family as it ends: minutes apart
    return rows


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
