"""The fused LIF (CPU path) against spikingjelly's LIFNode: identical spikes, input and parameter gradients,
less memory kept for backward, and the backend switch (``runtime.lif_backend``)."""

from __future__ import annotations

import pytest
import torch

from spikingformer._validation import ConfigError
from spikingformer.config import TrainConfig
from spikingformer.models import build_model
from spikingformer.neurons import (
    LIF_SETTINGS,
    MultiStepLIF,
    compare_lif_backends,
    describe_lif_backend,
    fused_is_exact,
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
    assert describe_lif_backend("fused", "cpu") == "fused multi-step LIF (C kernels, cpu)"
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
