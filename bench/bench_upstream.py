"""The project's training step as a multiple of upstream Spikingformer's, on this machine's CPU.

CIFAR 4-384 (12 heads, T 4) at batch 8, forward + backward + AdamW: upstream's own ``cifar10/model.py`` on
spikingjelly 0.0.0.0.12 (its LIFs forced to the 'torch' backend, since 'cupy' is CUDA-only; the neurons reset
after each step as upstream's training loop does) against ``spikingformer_cifar_4_384`` as a run of this
project trains it by default (``RuntimeConfig``'s ``lif_backend``, ``channels_last`` and ``compile``). Each side
in fresh interpreters (the two spikingjelly versions cannot share one), taking turns, best of 3 rounds, each
round's figure its best of a few steps after a warm-up one::

    python bench/bench_upstream.py --upstream DIR --spikingjelly DIR

``DIR``: a checkout of github.com/zhouchenlin2096/Spikingformer, and the folder holding spikingjelly 0.0.0.0.12
(its ``spikingjelly`` package). ``make bench`` has neither: its row says "not measured".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = 8
NAME = "step vs upstream Spikingformer: spikingformer_cifar_4_384 (12 heads) batch 8 cpu fp32"


def upstream_model(upstream: Path, spikingjelly: Path):
    """Upstream's CIFAR-10 network as its ``__main__`` builds it, and the reset its training loop calls per step."""
    sys.path[:0] = [str(spikingjelly), str(upstream / "cifar10")]
    from spikingjelly.clock_driven import functional, neuron
    from torch import nn

    class TorchLIF(neuron.MultiStepLIFNode):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "backend": "torch"})

    neuron.MultiStepLIFNode = TorchLIF  # before upstream's model.py imports the name
    import model

    net = model.vit_snn(img_size_h=32, img_size_w=32, patch_size=4, embed_dims=384, num_heads=12, mlp_ratios=4,
                        in_channels=3, num_classes=10, qkv_bias=False, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                        depths=4, sr_ratios=1, T=4)
    return net, net, functional.reset_net


def project_model():
    """``spikingformer_cifar_4_384`` with 12 heads under ``RuntimeConfig``'s defaults, as ``engine.set_up`` sets it."""
    import torch

    from spikingformer.config import RuntimeConfig
    from spikingformer.models import build_model
    from spikingformer.neurons import set_lif_backend

    runtime = RuntimeConfig()
    model = build_model("spikingformer_cifar_4_384", num_heads=12)
    set_lif_backend(model, runtime.lif_backend, "cpu")
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.compile(model) if runtime.compile else model, lambda model: None


def measure_side(side: str, upstream: Path, spikingjelly: Path, steps: int) -> dict:
    """In this (fresh) interpreter: one warm-up step, then the best of ``steps`` timed ones."""
    if side == "upstream":
        model, net, reset = upstream_model(upstream, spikingjelly)
    else:
        sys.path.insert(0, str(REPO))
        model, net, reset = project_model()
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
        reset(model)

    step()
    times, cpu_times = [], []
    for _ in range(steps):
        began, began_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - began)
        cpu_times.append(time.process_time() - began_cpu)
    return {"step_s": min(times), "step_cpu_s": min(cpu_times), "threads": torch.get_num_threads()}


def compare(upstream: Path, spikingjelly: Path, rounds: int = 3, steps: int = 2) -> list[dict]:
    """Both sides in turn, each in a fresh interpreter, ``rounds`` times: the best step of each, and the ratio."""
    best = {side: {"step_s": float("inf"), "step_cpu_s": float("inf")} for side in ("upstream", "project")}
    for _ in range(rounds):
        for side, fig in best.items():
            args = [sys.executable, __file__, "--child", side, "--upstream", str(upstream), "--spikingjelly",
                    str(spikingjelly), "--steps", str(steps)]
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"bench_upstream {side} failed:\n{done.stderr[-4000:]}")
            child = json.loads(done.stdout.strip().splitlines()[-1])
            fig.update({k: min(fig[k], child[k]) for k in ("step_s", "step_cpu_s")}, threads=child["threads"])
    context = {"batch": BATCH, "rounds": rounds, "steps_per_round": steps, "upstream": best["upstream"],
               "project": best["project"]}
    up, ours = best["upstream"], best["project"]
    return [
        {"name": NAME, "value": ours["step_s"] / up["step_s"], "unit": "x (step time, <1 faster)", **context},
        {"name": NAME + " in CPU time", "value": ours["step_cpu_s"] / up["step_cpu_s"], "unit": "x (CPU time)",
         **context},
        {"name": "upstream step time", "value": up["step_s"], "unit": "s", **context},
        {"name": "project step time", "value": ours["step_s"], "unit": "s", **context},
    ]


def run() -> list[dict]:
    """Under ``make bench``: no upstream checkout, so nothing to compare."""
    how = "python bench/bench_upstream.py --upstream DIR --spikingjelly DIR"
    return [{"name": f"{NAME}: not measured (needs {how})", "value": float("nan"), "unit": "x"}]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", type=Path, help="the upstream Spikingformer repository folder")
    parser.add_argument("--spikingjelly", type=Path, help="folder holding spikingjelly 0.0.0.0.12")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round, after one warm-up")
    parser.add_argument("--child", choices=["upstream", "project"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_side(args.child, args.upstream, args.spikingjelly, args.steps)))
    elif args.upstream is None or args.spikingjelly is None:
        print(run()[0]["name"])
    else:
        for row in compare(args.upstream, args.spikingjelly, args.rounds, args.steps):
            print(f"{row['name']}: {row['value']:.4g} {row['unit']}")
