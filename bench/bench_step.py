"""One training step (forward, backward, AdamW) of the same model in the ways of running it still worth
comparing, side by side: eager (the reference), ``torch.compile`` (Inductor, the fused LIF operator inside its
graph) and channels_last memory format.

One process, one model copy per variant from the same initial weights, the variants taking turns step by step
for several rounds; each variant's figure is its best step (wall-clock, and the process's CPU time, which holds
up better when neighbours share the cores), with its ratio to eager. Before timing, each variant runs forward and
backward once on the same batch as eager: ``exact`` says its logits and every parameter gradient are bit for bit
eager's (the condition for a default: spikes flip on a threshold at the last bit, so "close" is not enough).

CPU (``run``): ``spikingformer_cifar_4_384`` (12 heads) at batch 8, fp32 (the step ``bench_upstream`` compares
with upstream's). CUDA (``cuda_rows``, ``make gpu-check``): ``spikingformer_8_768`` at the ImageNet recipe's
per-GPU batch, eager against compiled, in fp32 and bf16 autocast, with each variant's peak memory.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from spikingformer.models import build_model
from spikingformer.neurons import set_lif_backend

#: name -> (torch.compile, channels_last)
VARIANTS = {"eager": (False, False), "compile": (True, False), "channels_last": (False, True)}
CPU_CASE = ("spikingformer_cifar_4_384", {"num_heads": 12}, 8)
#: ImageNet recipe's per-GPU batch (spikingformer.recipes.IMAGENET): 36.
CUDA_CASE = ("spikingformer_8_768", {}, 36)


def _exactness(logits: torch.Tensor, grads: list[torch.Tensor], reference: tuple) -> dict:
    """Bit for bit against eager, and the largest differences relative to eager's largest logit and gradient
    (relative to the model's largest gradient: a conv bias ahead of BN has a true gradient of 0)."""
    ref_logits, ref_grads = reference
    exact = torch.equal(logits, ref_logits) and all(torch.equal(g, r) for g, r in zip(grads, ref_grads, strict=True))
    grad_diff = max(float((g.float() - r.float()).abs().max()) for g, r in zip(grads, ref_grads, strict=True))
    return {"exact": exact,
            "logits_rel_diff": float((logits.float() - ref_logits.float()).abs().max() / ref_logits.abs().max()),
            "grad_rel_diff": grad_diff / max(float(r.abs().max()) for r in ref_grads)}


def _variant(base: torch.nn.Module, compiled: bool, channels_last: bool, backend: str,
             x: torch.Tensor) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(the model, what trains: it or its compiled form, the batch in the variant's memory format)."""
    model = copy.deepcopy(base)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return model, torch.compile(model, backend=backend) if compiled else model, x


def measure(
    name: str, kwargs: dict, batch: int, device: str, variants: dict[str, tuple[bool, bool]], rounds: int,
    amp: str = "fp32", compile_backend: str = "inductor",
) -> list[dict]:
    """Rows for each variant against the first (eager): best step, its ratio, warm-up, exactness, peak memory."""
    device = torch.device(device)
    torch.manual_seed(0)
    base = build_model(name, **kwargs).to(device)
    lif = set_lif_backend(base, "auto", device)
    x = torch.randn(batch, *base.input_shape, device=device)
    y = torch.randint(0, base.num_classes, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    steps: dict[str, Callable[[], None]] = {}
    figures: dict[str, dict] = {}
    reference = None
    for label, (compiled, channels_last) in variants.items():
        model, net, xv = _variant(base, compiled, channels_last, compile_backend, x)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(net=net, optimizer=optimizer, xv=xv) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = net(xv)
            F.cross_entropy(logits.float(), y).backward()
            return logits.detach()

        began = time.perf_counter()
        logits = step()  # the exactness pass, before any update; compiles
        sync()
        warmup = time.perf_counter() - began
        grads = [p.grad.clone() for p in model.parameters()]
        if reference is None:
            reference = logits, grads
        figures[label] = {"warmup_s": warmup, **_exactness(logits, grads, reference), "step_s": float("inf"),
                          "step_cpu_s": float("inf"), "peak_mb": 0.0}

        def train_step(step=step, optimizer=optimizer) -> None:
            step()
            optimizer.step()
            sync()

        train_step()  # one update before timing (lazy optimizer state, a compiled graph's first backward)
        steps[label] = train_step
    for _ in range(rounds):
        for label, train_step in steps.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            began, began_cpu = time.perf_counter(), time.process_time()
            train_step()
            fig = figures[label]
            fig["step_s"] = min(fig["step_s"], time.perf_counter() - began)
            fig["step_cpu_s"] = min(fig["step_cpu_s"], time.process_time() - began_cpu)
            if device.type == "cuda":
                fig["peak_mb"] = max(fig["peak_mb"], torch.cuda.max_memory_allocated(device) / 2**20)
    base_fig = figures[next(iter(variants))]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for label, fig in figures.items():
        context = {"model": name, "kwargs": kwargs, "batch": batch, "device": where, "amp": amp, "lif": lif,
                   "variant": label, "rounds": rounds, "compile_backend": compile_backend, **fig}
        tag = f"{name} batch {batch} {device.type} {amp} {label}"
        rows += [
            {"name": f"step time {tag}", "value": fig["step_s"], "unit": "s", **context},
            {"name": f"speed vs eager {tag}", "value": base_fig["step_s"] / fig["step_s"], "unit": "x", **context},
            {"name": f"speed vs eager in CPU time {tag}", "value": base_fig["step_cpu_s"] / fig["step_cpu_s"],
             "unit": "x", **context},
            {"name": f"bit-identical to eager {tag}", "value": float(fig["exact"]), "unit": "bool", **context},
        ]
        if device.type == "cuda":
            rows.append({"name": f"peak memory {tag}", "value": fig["peak_mb"], "unit": "MB", **context})
    return rows


def cuda_rows(rounds: int = 5) -> list[dict]:
    """Eager against compiled on the GPU, fp32 and bf16 autocast."""
    name, kwargs, batch = CUDA_CASE
    variants = {k: VARIANTS[k] for k in ("eager", "compile")}
    return [row for amp in ("fp32", "bf16") for row in measure(name, kwargs, batch, "cuda", variants, rounds, amp)]


def run() -> list[dict]:
    name, kwargs, batch = CPU_CASE
    rows = measure(name, kwargs, batch, "cpu", VARIANTS, rounds=5)
    return rows + (cuda_rows() if torch.cuda.is_available() else [])


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']}: {row['value']:.4g} {row['unit']}")
