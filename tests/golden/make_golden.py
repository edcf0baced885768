"""Write the golden fixtures: small upstream networks run by the upstream code itself.

Run in a process of its own, never under pytest (it imports spikingjelly 0.0.0.0.12, whose name clashes with the
project's spikingjelly 2.0)::

    python tests/golden/make_golden.py --upstream-root DIR --spikingjelly PATH [--cases NAME ...]

``DIR`` holds one clone per upstream repository, each checked out at the commit ``REPOSITORIES`` (and the
manifest) names::

    DIR/Spikingformer             zhouchenlin2096/Spikingformer
    DIR/spikformer                ZK-Zhou/spikformer
    DIR/Spike-Driven-Transformer  BICLab/Spike-Driven-Transformer
    DIR/QKFormer                  zhouchenlin2096/QKFormer

``PATH`` is a folder holding spikingjelly 0.0.0.0.12 (``pip install --no-deps --target PATH
spikingjelly==0.0.0.0.12``); it goes first on ``sys.path``, and its multi-step LIF is forced onto the torch
backend (upstream asks for cupy; the two compute the same). ``einops``, imported but unused by some upstream
files, is stubbed when it is not installed.

Each case builds one upstream model file's network at a small width and depth with its real layer types, real T
and a batch of 2 or more, calibrates every BatchNorm on the case's input (running statistics from the input; the
affine parameters drawn at random, then raised where a LIF layer stays nearly silent) so that every LIF call fires,
and writes ``<case>.npz`` (the state dict under upstream's names, the input, labels, eval and train-mode logits,
the loss and every parameter's gradient) and its entry in ``manifest.json`` (the upstream file and its
dependencies with their sha256, the configuration of both sides, and the spike count of every LIF call in call
order under upstream's module name). ``tests/test_golden.py`` compares the project's models with them.

It also writes ``upstream_layouts.json``: the state-dict layout (key -> shape) and parameter count of full-size
upstream configurations (``LAYOUTS``), against which the checkpoint-import tests check
the key rules of the registered models.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import types
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: repository folder -> (GitHub owner/name, commit)
REPOSITORIES = {
    "Spikingformer": ("zhouchenlin2096/Spikingformer", "4378623b82bb1999b137244950ad648566e148fd"),
    "spikformer": ("ZK-Zhou/spikformer", "621268981827af47aa666c1b5f774de4281d90ad"),
    "Spike-Driven-Transformer": ("BICLab/Spike-Driven-Transformer", "3faa82272eb499e4d56ea77707d4536e7c69a54b"),
    "QKFormer": ("zhouchenlin2096/QKFormer", "c2a00e8e54538e76f5954614a60c1d53824bbee9"),
}
#: Fewest spikes any LIF call of a case may fire, in eval and in train mode.
MIN_SPIKES = 100
#: Highest firing rate any LIF call of a case may have (a layer firing everywhere proves as little as a silent one).
MAX_RATE = 0.9
#: What a quiet (saturated) LIF call's driving BatchNorms get added to (taken from) their bias per round.
BIAS_STEP = 0.25
SEED = 2024
#: A LIF's own BatchNorm: ``q_lif`` <- ``q_bn``, SDT's ``proj_lif1`` <- ``proj_bn1``.
OWN_BN = re.compile(r"lif(\d*)$")


@dataclass(frozen=True)
class Case:
    """One upstream model file at a small configuration, and the registered model of ours it must equal."""

    repository: str
    file: str
    #: The upstream class and its constructor arguments.
    builder: str
    upstream: dict[str, Any]
    #: Our registered model and its overrides.
    model: str
    kwargs: dict[str, Any]
    #: One sample's shape; event input ``[T, C, H, W]`` holds event counts.
    sample: tuple[int, ...]
    event: bool = False
    batch: int = 2
    #: ``{"kind": "cross_entropy"}`` or upstream criterion.py's TET loss with its arguments.
    loss: dict[str, Any] = field(default_factory=lambda: {"kind": "cross_entropy"})
    #: Files the model file imports (their sha256 go to the manifest too).
    depends: tuple[str, ...] = ()


SDT_FILES = ("module/ms_conv.py", "module/sps.py", "module/__init__.py")
TET = {"kind": "tet", "smoothing": 0.1, "means": 1.0, "lamb": 0.001}


def _spikingformer(**kwargs: Any) -> dict[str, Any]:
    return dict(patch_size=4, mlp_ratios=4, qkv_bias=False, depths=2, sr_ratios=1, **kwargs)


def _sdt(**kwargs: Any) -> dict[str, Any]:
    return dict(patch_size=4, qkv_bias=False, depths=2, sr_ratios=1, embed_dims=32, num_heads=4, **kwargs)


CASES: dict[str, Case] = {
    # Spikingformer: cifar10/model.py (cifar100's differs in its demo only), imagenet/model.py, and
    # dvs128-gesture/model.py (cifar10-dvs's differs in its class count), which hard-codes 128x128 input.
    "spikingformer_cifar": Case(
        "Spikingformer", "cifar10/model.py", "vit_snn",
        _spikingformer(img_size_h=32, img_size_w=32, in_channels=3, num_classes=10, embed_dims=32,
                       num_heads=4, T=4),
        "spikingformer_cifar_4_256", dict(embed_dim=32, depth=2, num_heads=4), (3, 32, 32)),
    "spikingformer_imagenet": Case(
        "Spikingformer", "imagenet/model.py", "vit_snn",
        _spikingformer(img_size_h=64, img_size_w=64, in_channels=3, num_classes=10, embed_dims=32,
                       num_heads=4, T=4),
        "spikingformer_8_384", dict(img_size=64, embed_dim=32, depth=2, num_heads=4, num_classes=10), (3, 64, 64)),
    "spikingformer_dvs128": Case(
        "Spikingformer", "dvs128-gesture/model.py", "vit_snn",
        _spikingformer(img_size_h=128, img_size_w=128, in_channels=2, num_classes=11, embed_dims=32,
                       num_heads=4, T=16),
        "spikingformer_dvs_2_256", dict(embed_dim=32, depth=2, num_heads=4), (16, 2, 128, 128), event=True),
    # Spikformer: cifar10/model.py (nn.Linear projections) and imagenet/model.py (T=4 in its forward).
    "spikformer_cifar": Case(
        "spikformer", "cifar10/model.py", "Spikformer",
        dict(img_size_h=32, img_size_w=32, patch_size=4, in_channels=3, num_classes=10, embed_dims=32, num_heads=4,
             mlp_ratios=4, qkv_bias=False, depths=2, sr_ratios=1, T=4),
        "spikformer_cifar_4_256", dict(embed_dim=32, depth=2, num_heads=4), (3, 32, 32)),
    "spikformer_imagenet": Case(
        "spikformer", "imagenet/model.py", "Spikformer",
        dict(img_size_h=64, img_size_w=64, patch_size=16, in_channels=3, num_classes=10, embed_dims=32, num_heads=4,
             mlp_ratios=4, qkv_bias=False, depths=2, sr_ratios=1),
        "spikformer_8_384", dict(img_size=64, embed_dim=32, depth=2, num_heads=4, num_classes=10), (3, 64, 64)),
    # SDT: one model file (model/spikeformer.py) for every dataset, told apart by pooling_stat and dvs_mode.
    "sdt_cifar": Case(
        "Spike-Driven-Transformer", "model/spikeformer.py", "SpikeDrivenTransformer",
        _sdt(img_size_h=32, img_size_w=32, in_channels=3, num_classes=10, mlp_ratios=4, T=4, pooling_stat="0011"),
        "sdt_cifar_2_512", dict(embed_dim=32, depth=2, num_heads=4), (3, 32, 32), depends=SDT_FILES),
    "sdt_cifar_mlp_ratio_1": Case(
        "Spike-Driven-Transformer", "model/spikeformer.py", "SpikeDrivenTransformer",
        _sdt(img_size_h=32, img_size_w=32, in_channels=3, num_classes=10, mlp_ratios=1, T=4, pooling_stat="0011"),
        "sdt_cifar_2_512", dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=1.0), (3, 32, 32), depends=SDT_FILES),
    "sdt_imagenet": Case(
        "Spike-Driven-Transformer", "model/spikeformer.py", "SpikeDrivenTransformer",
        _sdt(img_size_h=64, img_size_w=64, in_channels=3, num_classes=10, mlp_ratios=4, T=4, pooling_stat="1111"),
        "sdt_8_384", dict(img_size=64, embed_dim=32, depth=2, num_heads=4, num_classes=10), (3, 64, 64),
        depends=SDT_FILES),
    "sdt_dvs128": Case(
        "Spike-Driven-Transformer", "model/spikeformer.py", "SpikeDrivenTransformer",
        _sdt(img_size_h=64, img_size_w=64, in_channels=2, num_classes=11, mlp_ratios=4, T=16, pooling_stat="0111"),
        "sdt_dvs_2_256", dict(img_size=64, embed_dim=32, depth=2, num_heads=4), (16, 2, 64, 64), event=True,
        depends=SDT_FILES),
    # conf/cifar10-dvs/2_256_200E_t10_TET.yml: T=10, 64x64 frames, Erode (dvs_mode), TET loss (criterion.py)
    "sdt_cifar10dvs": Case(
        "Spike-Driven-Transformer", "model/spikeformer.py", "SpikeDrivenTransformer",
        _sdt(img_size_h=64, img_size_w=64, in_channels=2, num_classes=10, mlp_ratios=4, T=10, pooling_stat="0011",
             dvs_mode=True, TET=True),
        "sdt_cifar10dvs_2_256", dict(embed_dim=32, depth=2, num_heads=4, T=10, tet=True), (10, 2, 64, 64),
        event=True, loss=TET, depends=(*SDT_FILES, "criterion.py")),
    # QKFormer: cifar10/model.py (cifar100's is the same network) hard-codes 8 heads, the DVS files 16.
    "qkformer_cifar": Case(
        "QKFormer", "cifar10/model.py", "spiking_transformer",
        dict(img_size_h=32, img_size_w=32, patch_size=4, in_channels=3, num_classes=10, embed_dims=32, num_heads=8,
             mlp_ratios=4, qkv_bias=False, depths=3, sr_ratios=1, T=4),
        "qkformer_cifar_4_384", dict(embed_dim=32, depth=3), (3, 32, 32)),
    "qkformer_imagenet": Case(
        "QKFormer", "imagenet/qkformer.py", "hierarchical_spiking_transformer",
        dict(T=4, img_size_h=64, img_size_w=64, patch_size=16, in_channels=3, num_classes=10, embed_dims=32,
             num_heads=4, mlp_ratios=4, qkv_bias=False, depths=4, sr_ratios=1),
        "qkformer_10_384", dict(img_size=64, embed_dim=32, depth=4, num_heads=4, num_classes=10), (3, 64, 64)),
    "qkformer_dvs128": Case(
        "QKFormer", "dvs128-gesture/model.py", "vit_snn",
        dict(img_size_h=64, img_size_w=64, patch_size=16, in_channels=2, num_classes=11, embed_dims=32,
             num_heads=16, mlp_ratios=4, qkv_bias=False, depths=2, sr_ratios=1, T=16),
        "qkformer_dvs_2_256", dict(img_size=64, embed_dim=32), (16, 2, 64, 64), event=True),
    "qkformer_cifar10dvs": Case(
        "QKFormer", "cifar10-dvs/model.py", "vit_snn",
        dict(img_size_h=64, img_size_w=64, patch_size=16, in_channels=2, num_classes=10, embed_dims=32,
             num_heads=16, mlp_ratios=1, qkv_bias=False, depths=2, sr_ratios=1, T=16),
        "qkformer_cifar10dvs_2_256", dict(img_size=64, embed_dim=32), (16, 2, 64, 64), event=True),
}


@dataclass(frozen=True)
class Layout:
    """A full-size upstream configuration: the factory (or class) of a model file and its arguments."""

    repository: str
    file: str
    builder: str
    kwargs: dict[str, Any]


_QKFORMER_CIFAR = dict(img_size_h=32, img_size_w=32, patch_size=4, embed_dims=384, num_heads=8, mlp_ratios=4,
                       in_channels=3, qkv_bias=False, depths=4, sr_ratios=1, T=4)
_IMAGENET_8_384 = dict(img_size_h=224, img_size_w=224, patch_size=16, embed_dims=384, mlp_ratios=4, in_channels=3,
                       num_classes=1000, qkv_bias=False, depths=8, sr_ratios=1, T=4)
_CIFAR_4_384 = dict(img_size_h=32, img_size_w=32, patch_size=4, embed_dims=384, mlp_ratios=4, in_channels=3,
                    num_classes=10, qkv_bias=False, depths=4, sr_ratios=1, T=4)
LAYOUTS: dict[str, Layout] = {
    **{f"qkformer_10_{d}": Layout("QKFormer", "imagenet/qkformer.py", f"QKFormer_10_{d}", dict(T=4))
       for d in (384, 512, 768)},
    "qkformer_cifar_4_384": Layout("QKFormer", "cifar10/model.py", "spiking_transformer",
                                   dict(_QKFORMER_CIFAR, num_classes=10)),
    "qkformer_cifar_4_384-100": Layout("QKFormer", "cifar100/model.py", "spiking_transformer",
                                       dict(_QKFORMER_CIFAR, num_classes=100)),
    "qkformer_cifar10dvs_2_256": Layout("QKFormer", "cifar10-dvs/model.py", "QKFormer", {}),
    "qkformer_dvs_2_256": Layout("QKFormer", "dvs128-gesture/model.py", "QKFormer", {}),
    "sdt_8_384": Layout("Spike-Driven-Transformer", "model/spikeformer.py", "SpikeDrivenTransformer",
                        dict(img_size_h=224, img_size_w=224, patch_size=16, in_channels=3, num_classes=1000,
                             embed_dims=384, num_heads=8, mlp_ratios=4, depths=8, T=4, pooling_stat="1111")),
    # Spikingformer and Spikformer: each train.py's create_model arguments (yml values for dim, heads, depth, T).
    "spikingformer_8_384": Layout("Spikingformer", "imagenet/model.py", "Spikingformer",
                                  dict(_IMAGENET_8_384, num_heads=8)),
    "spikingformer_cifar_4_384": Layout("Spikingformer", "cifar10/model.py", "Spikingformer",
                                        dict(_CIFAR_4_384, num_heads=12)),
    "spikingformer_dvs_2_256": Layout("Spikingformer", "dvs128-gesture/model.py", "Spikingformer", dict(T=16)),
    "spikformer_8_384": Layout("spikformer", "imagenet/model.py", "Spikformer",  # T is fixed in its forward
                               {k: v for k, v in dict(_IMAGENET_8_384, num_heads=8).items() if k != "T"}),
    "spikformer_cifar_4_384": Layout("spikformer", "cifar10/model.py", "spikformer",
                                     dict(_CIFAR_4_384, num_heads=12)),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_checkout(root: Path, repository: str) -> None:
    """Refuse a clone at another commit than the fixtures are pinned to (a folder without git is taken as is)."""
    folder = root / repository
    if not folder.is_dir():
        raise SystemExit(f"{folder} is missing: clone {REPOSITORIES[repository][0]} there")
    if (folder / ".git").exists():
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        if head != REPOSITORIES[repository][1]:
            raise SystemExit(f"{folder} is at {head}, the fixtures are pinned to {REPOSITORIES[repository][1]}")


def use_spikingjelly_012(path: Path) -> Any:
    """spikingjelly 0.0.0.0.12 from ``path``, its multi-step LIF nodes forced onto the torch backend."""
    sys.path.insert(0, str(path.resolve()))
    from spikingjelly.clock_driven import neuron

    if metadata.version("spikingjelly") != "0.0.0.0.12":
        raise SystemExit(f"{path} holds spikingjelly {metadata.version('spikingjelly')}, not 0.0.0.0.12")
    for node in (neuron.MultiStepLIFNode, neuron.MultiStepParametricLIFNode):
        node.__init__ = _torch_backend(node.__init__)
    return neuron


def _torch_backend(init: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, "backend": "torch"})

    return __init__


def stub_einops() -> None:
    """Some upstream files import ``einops.layers.torch.Rearrange`` and never use it."""
    if importlib.util.find_spec("einops") is not None:
        return
    layers = types.ModuleType("einops.layers.torch")
    layers.Rearrange = None
    sys.modules.update({"einops": types.ModuleType("einops"), "einops.layers": types.ModuleType("einops.layers"),
                        "einops.layers.torch": layers})


def load_module(root: Path, case: Case | Layout, name: str) -> types.ModuleType:
    """The upstream model file as a module of its own (SDT's imports its ``module`` package from its root)."""
    folder = root / case.repository
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"upstream_{name}", folder / case.file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # timm's register_model looks its module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def criterion_of(root: Path, case: Case) -> Any:
    """The training loss of the case: cross-entropy, or SDT's ``criterion.TET_loss`` around timm's smoothed CE."""
    import torch
    from timm.loss import LabelSmoothingCrossEntropy

    if case.loss["kind"] == "cross_entropy":
        return torch.nn.functional.cross_entropy
    spec = importlib.util.spec_from_file_location("upstream_criterion", root / case.repository / "criterion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    smooth = LabelSmoothingCrossEntropy(case.loss["smoothing"])
    return lambda out, target: module.TET_loss(out, target, smooth, case.loss["means"], case.loss["lamb"])


class SpikeCounter:
    """Every call of every multi-step LIF: (upstream module name, spikes fired, input shape), in call order."""

    def __init__(self, net: Any, lif_type: type) -> None:
        self.calls: list[tuple[str, int, list[int]]] = []
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in net.named_modules()
                        if isinstance(m, lif_type)]

    def _hook(self, name: str) -> Any:
        def hook(module: Any, inputs: tuple, output: Any) -> None:
            self.calls.append((name, int(output.detach().sum().item()), list(inputs[0].shape)))

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def make_input(case: Case, generator: Any) -> tuple[Any, Any]:
    import torch

    shape = (case.batch, *case.sample)
    if case.event:  # sparse event counts, as integrated DVS frames are
        counts = torch.randint(1, 4, shape, generator=generator)
        x = (counts * (torch.rand(shape, generator=generator) < 0.15)).float()
    else:
        x = torch.randn(shape, generator=generator)
    return x, torch.randint(0, case.upstream["num_classes"], (case.batch,), generator=generator)


def upstream_forward(net: Any, x: Any, reset: Any) -> Any:
    out = net(x)
    reset(net)
    return out[0] if isinstance(out, tuple) else out  # SDT returns (logits, hook)


def driving_bns(lif: str, bns: set[str]) -> list[str]:
    """The BatchNorms whose outputs drive the LIF named ``lif``: its own (``q_lif`` <- ``q_bn``, ``proj_lif1`` <-
    ``proj_bn1``), or, for an attention LIF fed by spike products, the q, k and v BatchNorms beside it."""
    prefix, _, leaf = lif.rpartition(".")
    if leaf in ("attn_lif", "talking_heads_lif"):
        return [n for n in (f"{prefix}.{p}_bn" for p in "qkv") if n in bns]
    own = ".".join(filter(None, (prefix, OWN_BN.sub(r"bn\1", leaf))))
    return [own] if own in bns else []


def calibrate(net: Any, x: Any, reset: Any, lif_type: type, generator: Any) -> dict[str, float]:
    """BN running statistics from ``x`` (one cumulative train-mode pass), random affine parameters, then the bias
    of every BN driving a LIF call that fires fewer than ``MIN_SPIKES`` raised by ``BIAS_STEP`` (lowered, for one
    firing at more than ``MAX_RATE``) until every call fires in between. Returns the total bias change per BN."""
    import torch
    from torch import nn

    bns = {name: m for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    with torch.no_grad():
        for bn in bns.values():
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) + 0.8)
            bn.bias.copy_(torch.rand(bn.bias.shape, generator=generator) - 0.3)
    raised: dict[str, float] = {}
    for _ in range(40):
        with torch.no_grad():
            for bn in bns.values():
                bn.reset_running_stats()
                bn.momentum = None
            upstream_forward(net.train(), x, reset)
            for bn in bns.values():
                bn.momentum = 0.1
        quiet, saturated = set(), set()
        for train in (False, True):
            counter = SpikeCounter(net, lif_type)
            with torch.no_grad():
                upstream_forward(net.train(train), x, reset)
            counter.close()
            quiet |= {name for name, count, _ in counter.calls if count < MIN_SPIKES}
            saturated |= {name for name, count, shape in counter.calls if count > MAX_RATE * np.prod(shape)}
        if not quiet | saturated:
            return raised
        steps = {bn: step for lifs, step in ((saturated, -BIAS_STEP), (quiet, BIAS_STEP))
                 for lif in lifs for bn in driving_bns(lif, set(bns))}
        if not steps:
            raise SystemExit(f"LIF calls {sorted(quiet | saturated)} are out of range and no BatchNorm drives them")
        with torch.no_grad():
            for name, step in steps.items():
                bns[name].bias.add_(step)
                raised[name] = raised.get(name, 0.0) + step
    raise SystemExit(f"LIF calls {sorted(quiet | saturated)} still fire out of range after calibration")


def run_case(root: Path, name: str, case: Case, neuron: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Build, calibrate and run one case; returns its arrays and its manifest entry."""
    import torch
    from spikingjelly.clock_driven import functional

    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    module = load_module(root, case, name)
    net = getattr(module, case.builder)(**case.upstream)
    x, labels = make_input(case, generator)
    raised = calibrate(net, x, functional.reset_net, neuron.MultiStepLIFNode, generator)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    spikes = {}
    counter = SpikeCounter(net, neuron.MultiStepLIFNode)
    with torch.no_grad():
        logits_eval = upstream_forward(net.eval(), x, functional.reset_net)
    if case.loss["kind"] == "tet":  # upstream's validate averages TET's per-step logits
        logits_eval = logits_eval.mean(0)
    spikes["eval"], counter.calls = counter.calls, []
    logits_train = net.train()(x)
    logits_train = logits_train[0] if isinstance(logits_train, tuple) else logits_train
    spikes["train"] = counter.calls
    counter.close()
    loss = criterion_of(root, case)(logits_train, labels)
    loss.backward()
    functional.reset_net(net)

    arrays = {"input": x.to(torch.uint8) if case.event else x, "labels": labels, "logits_eval": logits_eval,
              "logits_train": logits_train.detach(), "loss": loss.detach()}
    arrays |= {f"state/{k}": v for k, v in state.items()}
    # a parameter no gradient reaches (the unused LayerNorms, SDT's talking_heads) gets zeros
    arrays |= {f"grad/{k}": torch.zeros_like(p) if p.grad is None else p.grad for k, p in net.named_parameters()}
    files = [case.file, *case.depends]
    entry = {
        "repository": REPOSITORIES[case.repository][0],
        "files": {f: sha256(root / case.repository / f) for f in files},
        "upstream": {"builder": case.builder, "kwargs": case.upstream},
        **{k: v for k, v in asdict(case).items() if k in ("model", "kwargs", "event", "batch", "loss")},
        "sample": list(case.sample),
        "seed": SEED,
        "calibration": {"bn_bias_added": raised, "min_spikes": MIN_SPIKES, "max_rate": MAX_RATE},
        "spikes": {mode: [[n, c, s] for n, c, s in calls] for mode, calls in spikes.items()},
    }
    return {k: v.detach().cpu().numpy() for k, v in arrays.items()}, entry


def layout_of(root: Path, name: str, layout: Layout) -> dict[str, Any]:
    """A full-size upstream configuration's parameter count and state-dict layout."""
    module = load_module(root, layout, f"layout_{name}")
    net = getattr(module, layout.builder)(**layout.kwargs)  # on the CPU: upstream calls .item() while building
    return {"repository": REPOSITORIES[layout.repository][0], "file": layout.file,
            "sha256": sha256(root / layout.repository / layout.file), "builder": layout.builder,
            "kwargs": layout.kwargs, "parameters": sum(p.numel() for p in net.parameters()),
            "state_dict": {k: list(v.shape) for k, v in net.state_dict().items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream-root", type=Path, required=True, help="one clone per upstream repository")
    parser.add_argument("--spikingjelly", type=Path, required=True, help="folder holding spikingjelly 0.0.0.0.12")
    parser.add_argument("--out", type=Path, default=HERE, help="where the fixtures go (default: beside this file)")
    parser.add_argument("--cases", nargs="*", choices=sorted(CASES),
                        help="only these cases (default: all; none given: only upstream_layouts.json)")
    args = parser.parse_args(argv)
    neuron = use_spikingjelly_012(args.spikingjelly)
    stub_einops()
    warnings.filterwarnings("ignore")  # timm's deprecated import paths and registry overwrites in upstream files
    import torch

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    names = list(CASES) if args.cases is None else args.cases
    for repository in {CASES[n].repository for n in names} | {layout.repository for layout in LAYOUTS.values()}:
        check_checkout(args.upstream_root, repository)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"cases": {}}
    manifest.update({
        "generator": "tests/golden/make_golden.py",
        "torch": torch.__version__,
        "spikingjelly": metadata.version("spikingjelly"),
        "lif_backend": "torch",
        "repositories": {REPOSITORIES[r][0]: REPOSITORIES[r][1] for r in REPOSITORIES},
    })
    for name in names:
        arrays, entry = run_case(args.upstream_root, name, CASES[name], neuron)
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        manifest["cases"][name] = entry
        fired = [c for mode in entry["spikes"].values() for _, c, _ in mode]
        print(f"{name}: {len(entry['spikes']['eval'])} LIF calls, fewest spikes {min(fired)}, "
              f"{(args.out / f'{name}.npz').stat().st_size / 1e3:.0f} kB")
    manifest["cases"] = dict(sorted(manifest["cases"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    layouts = {name: layout_of(args.upstream_root, name, layout) for name, layout in LAYOUTS.items()}
    (args.out / "upstream_layouts.json").write_text(json.dumps(layouts, indent=None, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
