"""Gradient checkpointing (``model.set_grad_checkpointing()``): memory kept for backward and step time, side by side.

With checkpointing every block keeps only its input and is recomputed (from resting neurons) in the backward
pass, so the same gradients cost less memory and one more block forward. Measured on one training step
(forward + backward, no optimizer) of the same model and batch, without and with:

- ``saved_for_backward``: the bytes autograd keeps between forward and backward (every tensor packed for
  backward, read with ``torch.autograd.graph.saved_tensors_hooks``; a checkpointed block's own are not kept).
  Exact and the same on any device; the tokenizer is not checkpointed, so its activations stay in both.
- ``cuda_peak``: ``torch.cuda.max_memory_allocated`` over the step, on CUDA only.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from spikingformer import build_model

#: (registered model, batch) per device type; T as registered (4).
CONFIGS = {
    "cpu": [("spikingformer_cifar_4_384", 16), ("spikingformer_8_768", 1)],
    "cuda": [("spikingformer_cifar_4_384", 64), ("spikingformer_8_768", 8)],
}


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, float, float | None]:
    """One forward + backward: (bytes saved for backward, seconds, CUDA peak MB or None)."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    model.zero_grad(set_to_none=True)
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    if cuda:
        torch.cuda.synchronize(x.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(x.device) / 2**20 if cuda else None
    return sum(saved), seconds, peak


def measure(name: str, batch: int, device: torch.device) -> list[dict]:
    model = build_model(name).to(device).train()
    x = torch.randn(batch, *model.input_shape, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    results = {}
    for checkpointing in (False, True):
        model.set_grad_checkpointing(checkpointing)
        train_step(model, x, y)  # warm-up
        results[checkpointing] = train_step(model, x, y)
    context = {"model": name, "batch": batch, "T": model.T, "device": device.type, "threads": torch.get_num_threads()}
    (saved_off, time_off, peak_off), (saved_on, time_on, peak_on) = results[False], results[True]
    prefix = f"{name}/{device.type}/b{batch}"
    rows = [
        {"name": f"{prefix}/saved_for_backward", "value": saved_off / 2**20, "unit": "MB", **context},
        {"name": f"{prefix}/saved_for_backward_checkpointed", "value": saved_on / 2**20, "unit": "MB", **context},
        {"name": f"{prefix}/saved_for_backward_drop", "value": 100 * (1 - saved_on / saved_off), "unit": "%",
         **context},
        {"name": f"{prefix}/train_step_s", "value": time_off, "unit": "s", **context},
        {"name": f"{prefix}/train_step_s_checkpointed", "value": time_on, "unit": "s", **context},
    ]
    if peak_off is not None:
        rows += [
            {"name": f"{prefix}/cuda_peak", "value": peak_off, "unit": "MB", **context},
            {"name": f"{prefix}/cuda_peak_checkpointed", "value": peak_on, "unit": "MB", **context},
            {"name": f"{prefix}/cuda_peak_drop", "value": 100 * (1 - peak_on / peak_off), "unit": "%", **context},
        ]
    return rows


def run() -> list[dict]:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [row for device in devices for name, batch in CONFIGS[device.type] for row in measure(name, batch, device)]
