"""One training step (forward, backward, AdamW) under each LIF backend, side by side: spikingjelly and the fused
operator; step time and memory as ratios to the spikingjelly path (eager: ``bench_step`` sets compiled against
eager).

CPU rows: ``spikingformer_cifar_4_384`` at batch 8 and ``spikingformer_8_384`` at batch 2, fp32. CUDA rows (when
a GPU is present): ``spikingformer_8_768`` at the ImageNet recipe's per-GPU batch, each backend x {fp32, bf16}:
images/s, MFU (3 x dense forward FLOPs per image x images/s / the device's peak) and peak memory. Every
backend runs in its own child interpreter, so its peak memory is its own (CPU: growth of the resident set's
high-water mark over the steps; CUDA: ``max_memory_allocated``); step time is the best of the timed steps, in
wall-clock and in the process's CPU time (the figure that holds up when other processes share the cores:
wall-clock ratios then mostly measure the neighbours). Each row also carries the top entries of a
``torch.profiler`` table of one step (``profile_top``: op, self time %), the figure that says what bounds it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from spikingformer.energy.measure import profile_ops
from spikingformer.models import build_model
from spikingformer.neurons import describe_lif_backend, set_lif_backend

CPU_CASES = [("spikingformer_cifar_4_384", 8), ("spikingformer_8_384", 2)]
#: ImageNet recipe's per-GPU batch (spikingformer.recipes.IMAGENET): 36.
CUDA_CASES = [("spikingformer_8_768", 36)]
BACKENDS = ("spikingjelly", "fused")
#: Dense peak FLOP/s per device name fragment: (bf16 tensor core, fp32 without TF32); MFU is blank elsewhere.
PEAK_FLOPS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12), "L4": (121e12, 30e12)}


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _profile_top(step, rows: int = 6) -> list[list]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step()
    events = prof.key_averages()
    key = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events) or 1.0
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:rows]
    return [[e.key, round(100 * getattr(e, key) / total, 1)] for e in top]


def measure_variant(spec: dict) -> dict:
    """In this (fresh) interpreter: build ``spec``'s model, warm up, then time ``steps`` training steps."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = build_model(spec["model"], **spec.get("kwargs", {})).to(device)
    backend = set_lif_backend(model, spec["backend"], device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = spec["batch"]
    x = torch.randn(batch, *model.input_shape, device=device)
    y = torch.randint(0, model.num_classes, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp32": None}[spec["amp"]]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = _rss_kb("VmRSS")
    began = time.perf_counter()
    step()
    warmup = time.perf_counter() - began
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(spec["steps"]):
        began, began_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - began)
        cpu_times.append(time.process_time() - began_cpu)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (_rss_kb("VmHWM") - rss_before) / 1024
    return {"step_s": min(times), "step_s_median": sorted(times)[len(times) // 2], "step_cpu_s": min(cpu_times),
            "warmup_s": warmup,
            "peak_mb": peak_mb, "lif": describe_lif_backend(backend, device), "profile_top": _profile_top(step)}


def _child(spec: dict) -> dict:
    args = [sys.executable, __file__, "--child", json.dumps(spec)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_lif child {spec} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def variant_rows(
    cases: list[tuple[str, int]], device: str, amps: tuple[str, ...], backends: tuple[str, ...], steps: int,
    kwargs: dict | None = None,
) -> list[dict]:
    """Rows for every case x amp x backend: step time, images/s, peak memory, ratios to the first backend, MFU."""
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    peaks = next((p for k, p in PEAK_FLOPS.items() if k in device_name), None)
    rows = []
    for name, batch in cases:
        flops_per_image = 2 * profile_ops(build_model(name, **(kwargs or {}))).dense_flops  # MACs -> FLOPs
        for amp in amps:
            figures = {}
            for backend in backends:
                spec = {"model": name, "kwargs": kwargs or {}, "batch": batch, "device": device, "backend": backend,
                        "amp": amp, "steps": steps}
                figures[backend] = _child(spec)
            base = figures[backends[0]]
            for backend, fig in figures.items():
                images_per_s = batch / fig["step_s"]
                peak = None if peaks is None else peaks[0 if amp == "bf16" else 1]
                mfu = None if peak is None else 3 * flops_per_image * images_per_s / peak
                context = {"model": name, "batch": batch, "device": device_name, "amp": amp, "backend": backend,
                           "mfu": mfu, **fig}
                tag = f"{name} batch {batch} {device} {amp} {backend}"
                rows += [
                    {"name": f"step time {tag}", "value": fig["step_s"], "unit": "s", **context},
                    {"name": f"train {tag}", "value": images_per_s, "unit": "img/s", **context},
                    {"name": f"speed vs {backends[0]} {tag}", "value": base["step_s"] / fig["step_s"],
                     "unit": "x", **context},
                    {"name": f"CPU time per step {tag}", "value": fig["step_cpu_s"], "unit": "s", **context},
                    {"name": f"speed vs {backends[0]} in CPU time {tag}",
                     "value": base["step_cpu_s"] / fig["step_cpu_s"], "unit": "x", **context},
                    {"name": f"peak memory {tag}", "value": fig["peak_mb"], "unit": "MB", **context},
                    {"name": f"peak memory vs {backends[0]} {tag}",
                     "value": fig["peak_mb"] / base["peak_mb"], "unit": "x", **context},
                ]
                if mfu is not None:
                    rows.append({"name": f"MFU {tag}", "value": 100 * mfu, "unit": "%", **context})
    return rows


def cuda_rows(steps: int = 10) -> list[dict]:
    """The GPU figures: each backend x {fp32, bf16} on ``CUDA_CASES``."""
    return variant_rows(CUDA_CASES, "cuda", ("fp32", "bf16"), BACKENDS, steps)


def run() -> list[dict]:
    rows = variant_rows(CPU_CASES, "cpu", ("fp32",), BACKENDS, steps=4)
    return rows + (cuda_rows() if torch.cuda.is_available() else [])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", metavar="SPEC_JSON", help="measure one variant (internal)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_variant(json.loads(args.child))))
    else:
        print(json.dumps(run(), indent=1))
