"""Training-step throughput and peak memory of the models: forward + backward, no optimizer step.

CPU peak memory is the process's peak resident set so far (``ru_maxrss``, reported once before any
model is built as a baseline), so the small config runs first; CUDA peak memory is
``max_memory_allocated`` since a reset before each config.
"""

from __future__ import annotations

import resource
import time

import torch
import torch.nn.functional as F

from spikingformer import Spikingformer, build_model

WARMUP_STEPS = 2
TIMED_STEPS = 5

#: (label, model factory, batch). T = 4 for both.
CONFIGS = [
    ("tiny_cifar_1_64", lambda: Spikingformer(layout="cifar", embed_dim=64, depth=1, num_heads=4), 32),
    ("spikingformer_cifar_4_384", lambda: build_model("spikingformer_cifar_4_384"), 8),
]


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(label: str, make_model, batch: int, device: torch.device) -> list[dict]:
    model = make_model().to(device).train()
    x = torch.randn(batch, *model.input_shape, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(WARMUP_STEPS):
        train_step(model, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        train_step(model, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / TIMED_STEPS
    context = {"model": label, "batch": batch, "T": model.T, "device": device.type, "threads": torch.get_num_threads()}
    return [
        {"name": f"{label}/{device.type}/train_img_per_s", "value": batch / seconds, "unit": "img/s", **context},
        {"name": f"{label}/{device.type}/train_step_s", "value": seconds, "unit": "s", **context},
        {"name": f"{label}/{device.type}/peak_memory", "value": peak_memory_mb(device), "unit": "MB", **context},
    ]


def run() -> list[dict]:
    baseline = {"name": "cpu/peak_memory_before_models", "value": peak_memory_mb(torch.device("cpu")), "unit": "MB"}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [baseline] + [
        row for device in devices for label, make, batch in CONFIGS for row in measure(label, make, batch, device)
    ]
