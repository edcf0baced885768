"""The fused LIF operator (CPU kernels) against spikingjelly's LIFNode and the torch reference loop: identical
spikes, input and parameter gradients, less memory kept for backward, the operator's registrations
(``torch.library.opcheck``) and input checks, a whole model under ``torch.compile`` without graph breaks, and the
backend switch (``runtime.lif_backend``) with and without a compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import lif_reference

from spikingformer._validation import ConfigError
from spikingformer.config import TrainConfig
from spikingformer.models import build_model
from spikingformer.neurons import (
    LIF_SETTINGS,
    MultiStepLIF,
    build,
    compare_lif_backends,
    describe_lif_backend,
    fused_is_exact,
    op,
    resolve_lif_backend,
    set_lif_backend,
)


def lif_input(t: int, *, contiguous: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[T, 4, 24, 40]`` drive around the thresholds; non-contiguous: the same values, last two axes swapped."""
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(t, 4, 40, 24, generator=gen) * 1.2 + 0.7
    return (x.contiguous() if contiguous else x.transpose(-1, -2)).to(dtype)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("t", [1, 4, 10, 16])
@pytest.mark.parametrize("tau,v_threshold", LIF_SETTINGS)
def test_fused_equals_spikingjelly(tau: float, v_threshold: float, t: int, contiguous: bool) -> None:
    x = lif_input(t, contiguous=contiguous)
    assert x.is_contiguous() == contiguous
    result = compare_lif_backends(x, tau, v_threshold)
    assert result.spikes_equal
    assert result.grad_rel_error <= 1e-6
    assert 0.0 < result.firing_rate < 1.0  # spikes alive, not saturated


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tau,v_threshold", LIF_SETTINGS)
def test_low_precision_spikes_equal_reference_in_same_dtype(tau: float, v_threshold: float, dtype) -> None:
    """spikingjelly keeps the membrane in the input's dtype, rounding each operation; so does the fused
    forward. Its backward computes in fp32, the reference's in the dtype: gradients agree to the dtype's precision."""
    result = compare_lif_backends(lif_input(4, dtype=dtype), tau, v_threshold)
    assert result.spikes_equal
    assert result.grad_rel_error <= 2 * torch.finfo(dtype).eps
    assert 0.0 < result.firing_rate < 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tau,v_threshold", LIF_SETTINGS)
def test_op_equals_reference_loop(tau: float, v_threshold: float, dtype: torch.dtype) -> None:
    """From a non-resting membrane: spikes, H and the last membrane bit for bit; gradients (fp32 arithmetic from
    the same H) within 1e-6 of the largest, then rounded to the dtype."""
    x = lif_input(4, contiguous=False, dtype=dtype)
    v0 = (torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(1)) * 0.6).to(dtype)
    outputs = torch.ops.spikingformer.lif_multistep(x, v0, tau, v_threshold, op.SURROGATE_ALPHA)
    expected = lif_reference.forward(x, v0, tau, v_threshold)
    for name, got, want in zip(("spikes", "h", "v_last"), outputs, expected, strict=True):
        assert got.dtype == dtype and got.is_contiguous() and torch.equal(got, want), name
    assert 0.0 < outputs[0].float().mean() < 1.0
    grad_spikes = torch.linspace(-1, 1, x.numel()).view(x.shape).to(dtype)
    grad_v_last = torch.linspace(1, -1, v0.numel()).view(v0.shape).to(dtype)
    h = outputs[1]
    grads = torch.ops.spikingformer.lif_multistep_backward(grad_spikes, grad_v_last, h, tau, v_threshold, 4.0)
    for got, want in zip(grads, lif_reference.backward(grad_spikes, grad_v_last, h, tau, v_threshold), strict=True):
        assert got.dtype == dtype
        tolerance = 1e-6 * want.abs().max().item()
        torch.testing.assert_close(got, want.to(dtype), rtol=0, atol=max(tolerance, torch.finfo(dtype).eps))


@pytest.mark.parametrize("case", ["fp32", "strided", "bf16", "initial membrane"])
def test_opcheck(case: str) -> None:
    """torch.library's own checks of both operators: schema, fake tensors, autograd registration, AOT dispatch."""
    x = lif_input(3, contiguous=case != "strided", dtype=torch.bfloat16 if case == "bf16" else torch.float32)
    v0 = torch.full(x.shape[1:], 0.3, dtype=x.dtype, requires_grad=case == "initial membrane")
    torch.library.opcheck(op.lif_multistep, (x.requires_grad_(), v0, 2.0, 0.5, op.SURROGATE_ALPHA))
    h = torch.ops.spikingformer.lif_multistep(x, v0, 2.0, 0.5, op.SURROGATE_ALPHA)[1]
    torch.library.opcheck(op.lif_multistep_backward, (torch.randn_like(h), torch.randn_like(v0), h, 2.0, 0.5, 4.0))


def test_op_refuses_what_its_kernels_cannot_read() -> None:
    x, v0 = lif_input(2), torch.zeros(4, 40, 24)
    lif = torch.ops.spikingformer.lif_multistep
    with pytest.raises(TypeError, match="must share one of"):
        lif(x.double(), v0.double(), 2.0, 1.0, 4.0)
    with pytest.raises(TypeError, match="torch.float32 and torch.bfloat16"):
        lif(x, v0.bfloat16(), 2.0, 1.0, 4.0)
    with pytest.raises(ValueError, match=r"x \[2, 4, 40, 24\] must be \[T, \*v0.shape\] with v0 \[4, 24, 40\]"):
        lif(x, v0.transpose(-1, -2), 2.0, 1.0, 4.0)
    with pytest.raises(ValueError, match="x is on cpu but v0 on meta"):
        lif(x, v0.to("meta"), 2.0, 1.0, 4.0)
    # The C++ entry points guard their raw pointers themselves: a strided tensor is refused, never misread.
    with pytest.raises(RuntimeError, match="contiguous"):
        build.extension().forward(x.transpose(-1, -2), v0.transpose(-1, -2), 2.0, 1.0)


def test_initial_membrane_and_state_carry_over() -> None:
    """Two calls without a reset continue from the stored membrane, with gradients into it, as spikingjelly does."""
    x = lif_input(6)
    outputs = {}
    for backend in ("spikingjelly", "fused"):
        lif = MultiStepLIF(1.5, 0.5)
        lif.backend = backend
        xs = x.clone().requires_grad_()
        spikes = torch.cat([lif(xs[:3]), lif(xs[3:])])
        spikes.backward(torch.linspace(-1, 1, spikes.numel()).view_as(spikes))
        outputs[backend] = (spikes.detach(), xs.grad, lif.v)
    (s_ref, g_ref, v_ref), (s, g, v) = outputs["spikingjelly"], outputs["fused"]
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6 * g_ref.abs().max().item())


def saved_bytes(backend: str, x: torch.Tensor) -> int:
    """Bytes autograd keeps between one LIF's forward and backward (every tensor packed for backward)."""
    packed: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        packed.append(t.numel() * t.element_size())
        return t

    lif = MultiStepLIF()
    lif.backend = backend
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lif(x.clone().requires_grad_()).sum().backward()
    return sum(packed)


def test_fused_keeps_at_most_60_percent_of_spikingjelly_for_backward() -> None:
    x = lif_input(4)
    fused, reference = saved_bytes("fused", x), saved_bytes("spikingjelly", x)
    assert fused == x.numel() * 4  # H only, fp32
    assert fused <= 0.6 * reference


@pytest.mark.parametrize("name", ["spikingformer_cifar_4_384", "spikformer_cifar_4_384"])
def test_whole_model_parameter_gradients_equal(name: str) -> None:
    """Same weights, same batch: identical logits, parameter gradients within 1e-6 of the largest one."""
    torch.manual_seed(0)
    model = build_model(name, embed_dim=64, num_heads=4, depth=1)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    runs = {}
    for backend in ("spikingjelly", "fused"):
        assert set_lif_backend(model, backend, "cpu") == backend
        model.zero_grad(set_to_none=True)
        outputs: list[torch.Tensor] = []
        hooks = [m.register_forward_hook(lambda m, i, o, out=outputs: out.append(o.detach()))
                 for m in model.modules() if isinstance(m, MultiStepLIF)]
        logits = model(x)
        for hook in hooks:
            hook.remove()
        torch.nn.functional.cross_entropy(logits, y).backward()
        rates = [o.mean().item() for o in outputs]
        runs[backend] = (logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, rates)
    (logits_ref, grads_ref, rates_ref), (logits, grads, rates) = runs["spikingjelly"], runs["fused"]
    assert torch.equal(logits, logits_ref)
    assert rates == rates_ref and all(0.0 < r < 1.0 for r in rates)  # every LIF fires, identically
    # Relative to the model's largest gradient: a conv bias ahead of BN has a true gradient of 0, so its own
    # scale is rounding noise.
    scale = max(g.abs().max().item() for g in grads_ref.values())
    for n, g_ref in grads_ref.items():
        assert (grads[n] - g_ref).abs().max().item() <= 1e-6 * scale, n


def test_backend_selection() -> None:
    assert fused_is_exact("cpu")
    assert resolve_lif_backend("auto", "cpu") == "fused"
    assert resolve_lif_backend("spikingjelly", torch.device("cpu")) == "spikingjelly"
    assert describe_lif_backend("fused", "cpu") == "fused multi-step LIF (C++ kernels, cpu)"
    assert describe_lif_backend("spikingjelly", "cpu").startswith("spikingjelly 2.0.0 LIFNode")
    with pytest.raises(ValueError, match="lif_backend='cupy' is not one of"):
        resolve_lif_backend("cupy", "cpu")


def test_runtime_config_keys() -> None:
    config = TrainConfig.from_dict({"runtime": {"lif_backend": "fused", "compile": True}})
    assert config.runtime.lif_backend == "fused" and config.runtime.compile is True
    assert TrainConfig.from_dict({}).runtime.lif_backend == "auto"
    allowed = r"\['auto', 'spikingjelly', 'fused'\]"
    with pytest.raises(ConfigError, match=rf"runtime.lif_backend: 'cupy' is not one of {allowed}"):
        TrainConfig.from_dict({"runtime": {"lif_backend": "cupy"}})
    with pytest.raises(ConfigError, match="runtime.compile: expected bool"):
        TrainConfig.from_dict({"runtime": {"compile": "yes"}})


@pytest.mark.train
def test_engine_trains_the_same_under_both_backends(tmp_path) -> None:
    """One epoch (two SGD updates) through ``fit``: the fused backend ends on the same weights, to rounding (its C
    backward agrees with spikingjelly's to a few 1e-7). SGD, because AdamW turns the rounding noise of a conv bias
    ahead of BN (true gradient 0) into full learning-rate steps under either backend."""
    from spikingformer.checkpoints.training import LAST, read_file
    from spikingformer.training.engine import fit

    def train(backend: str) -> dict[str, torch.Tensor]:
        config = TrainConfig.from_dict({
            "model": {"name": "spikingformer_cifar_4_384", "kwargs": {"embed_dim": 64, "num_heads": 4, "depth": 1}},
            "data": {"dataset": "synthetic", "batch_size": 4, "train_size": 8, "eval_size": 4, "num_workers": 0},
            "optim": {"opt": "sgd", "lr": 0.1, "weight_decay": 0.0},
            "schedule": {"epochs": 1, "warmup_epochs": 0, "cooldown_epochs": 0},
            "runtime": {"device": "cpu", "lif_backend": backend},
        })
        fit(config, checkpoint_dir=tmp_path / backend)
        return read_file(tmp_path / backend / LAST)["model"]

    fused, reference = train("fused"), train("spikingjelly")
    for name, weight in reference.items():
        torch.testing.assert_close(fused[name], weight, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.compile
def test_model_compiles_without_graph_breaks_and_trains_as_eager() -> None:
    """``torch.compile(fullgraph=True)`` (AOT autograd: the op's fake implementation and registered backward) over
    a whole model: one graph for two training steps (the neurons' reset and state are traced, not broken on),
    and logits, every neuron's last membrane and every parameter gradient bit for bit those of eager."""
    import torch._dynamo.testing

    torch.manual_seed(0)
    model = build_model("spikingformer_cifar_4_384", embed_dim=64, num_heads=4, depth=1)
    set_lif_backend(model, "fused", "cpu")
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    neurons = [m for m in model.modules() if isinstance(m, MultiStepLIF)]

    def step(net: torch.nn.Module):
        model.zero_grad(set_to_none=True)
        logits = net(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        return logits.detach(), [m.v.detach() for m in neurons], [p.grad for p in model.parameters()]

    rates = []
    hooks = [m.register_forward_hook(lambda m, i, o: rates.append(o.mean().item())) for m in neurons]
    eager = step(model)
    for hook in hooks:
        hook.remove()
    assert all(0.0 < r < 1.0 for r in rates)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for _ in range(2):
        logits, membranes, grads = step(compiled)
        assert torch.equal(logits, eager[0])
        assert all(torch.equal(a, b) for a, b in zip(membranes, eager[1], strict=True))
        assert all(torch.equal(a, b) for a, b in zip(grads, eager[2], strict=True))
    assert counter.frame_count == 1


@pytest.mark.compile
def test_inductor_compiles_the_neuron() -> None:
    """Inductor around the op (a small graph: a whole model takes minutes to compile here): the same spikes and
    input gradients as eager, bit for bit (elementwise work only, which Inductor does not reorder)."""
    lif = MultiStepLIF(2.0, 0.5)
    lif.backend = "fused"
    w = torch.linspace(0.5, 1.5, 24)

    def f(x: torch.Tensor) -> torch.Tensor:
        lif.reset()
        return lif(x * w)

    results = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        x = lif_input(4).requires_grad_()
        spikes = fn(x)
        spikes.backward(torch.linspace(-1, 1, spikes.numel()).view_as(spikes))
        results.append((spikes.detach(), x.grad))
    (spikes, grad), (ref_spikes, ref_grad) = results[1], results[0]
    assert torch.equal(spikes, ref_spikes) and 0 < ref_spikes.mean() < 1
    assert torch.equal(grad, ref_grad)


NO_COMPILER = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s")
from spikingformer.neurons import resolve_lif_backend
from spikingformer.neurons.build import KernelBuildError
print("auto ->", resolve_lif_backend("auto", "cpu"))
try:
    resolve_lif_backend("fused", "cpu")
except KernelBuildError as err:
    print("fused -> KernelBuildError:", err)
"""


@pytest.mark.compile
def test_without_a_compiler_fused_stops_with_the_fix_and_auto_falls_back(tmp_path: Path) -> None:
    """A fresh interpreter whose PATH has ninja but no compiler, and an empty extension cache."""
    tools = tmp_path / "bin"
    tools.mkdir()
    if ninja := shutil.which("ninja"):
        (tools / "ninja").symlink_to(ninja)
    env = {**os.environ, "PATH": str(tools), "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    done = subprocess.run([sys.executable, "-c", NO_COMPILER], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "WARNING runtime.lif_backend 'auto' on cpu: spikingjelly, since the fused LIF is unavailable: " in out
    assert "auto -> spikingjelly" in out
    assert "fused -> KernelBuildError: fused LIF: building its CPU kernels" in out
    assert "Fix: install a C++ compiler with OpenMP and ninja" in out
