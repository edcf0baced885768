"""Cost of the energy pass: ``measure_energy`` time over a plain eval pass on the same batches.

Target: at most 1.3x (issue 3). Small CIFAR config on CPU, random weights (the hooks' reductions are
dense, so their cost does not depend on the firing rates). One torch thread, timed in process CPU seconds, so the
ratio does not depend on how many cores other work leaves free or how often it preempts us; runs are
interleaved and the fastest of each kind is kept, which makes the ratio robust to other load.
"""

from __future__ import annotations

import statistics
import time

import torch

from spikingformer import build_model
from spikingformer.energy import measure_energy

MODEL = "spikingformer_cifar_4_256"
BATCH, BATCHES, REPEATS, THREADS = 8, 3, 7, 1


def run() -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        times = _time_passes()
    finally:
        torch.set_num_threads(threads)
    context = {"model": MODEL, "batch": BATCH, "batches": BATCHES, "repeats": REPEATS, "device": "cpu",
               "threads": THREADS, "clock": "process CPU time"}  # fmt: skip
    per_image = BATCH * BATCHES
    return [
        {
            "name": "energy_pass_over_eval_ratio",
            "value": min(times["measured"]) / min(times["plain"]),
            "unit": "x",
            "median_ratio": statistics.median(m / p for m, p in zip(times["measured"], times["plain"], strict=True)),
            **context,
        },
        {"name": "eval_pass_per_image", "value": min(times["plain"]) / per_image * 1e3, "unit": "ms", **context},
        {"name": "energy_pass_per_image", "value": min(times["measured"]) / per_image * 1e3, "unit": "ms", **context},
    ]


def _time_passes() -> dict[str, list[float]]:
    """CPU seconds of each of ``REPEATS`` plain and measured passes over the same batches, interleaved."""
    torch.manual_seed(0)
    model = build_model(MODEL).eval()
    batches = [torch.randn(BATCH, *model.input_shape) for _ in range(BATCHES)]

    def plain() -> None:
        with torch.no_grad():
            for x in batches:
                model(x)

    def measured() -> None:
        measure_energy(model, batches)

    plain(), measured()  # warm-up
    times: dict[str, list[float]] = {"plain": [], "measured": []}
    for _ in range(REPEATS):
        for kind, fn in (("plain", plain), ("measured", measured)):
            start = time.process_time()
            fn()
            times[kind].append(time.process_time() - start)
    return times
