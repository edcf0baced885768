"""NeuroBench's metrics of our models, measured by the ``neurobench`` package itself, cross-checked against the
project's own counters where both count the same thing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch import nn

from spikingformer.energy import COUNTED_LAYERS, dense_ops
from spikingformer.energy.memory import measure_memory_inclusive
from spikingformer.energy.neurobench import neurobench_metrics
from spikingformer.models import build_model


def _weight_uses(model: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """Per image: weight uses that meet a real input (a ones-input, ones-weight pass of every Linear/Conv call: zero
    padding is no input) and our paper counters' dense ops without their one op per biased output (padding
    included, as the upstream counters count)."""
    meets, paper = [], []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        ones = torch.ones_like(inputs[0])
        if isinstance(module, nn.Linear):
            meets.append(F.linear(ones, torch.ones_like(module.weight)).sum().item())
        else:
            conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
            meets.append(conv(ones, torch.ones_like(module.weight), None, module.stride, module.padding,
                              module.dilation, module.groups).sum().item())
        paper.append(dense_ops(module, inputs[0], output) - (output.numel() if module.bias is not None else 0))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED_LAYERS)]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return sum(meets) / len(images), sum(paper) / len(images)


@pytest.mark.parametrize("name", ["spikingformer_cifar_2_384", "sdt_cifar_2_512"])
def test_neurobench_counts_our_models_and_agrees_with_our_counters(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, embed_dim=32, depth=1, num_heads=2, T=2).eval()
    for module in model.modules():
        if isinstance(module, BaseNode):
            module.v_threshold = 0.05  # random weights rarely reach 1.0: make the spikes alive
    images = torch.randn(4, 3, 32, 32)
    found = neurobench_metrics(model, list(images), batch_size=2)
    assert found["neurobench/parameter_count"] == sum(p.numel() for p in model.parameters())
    assert found["neurobench/footprint_bytes"] == sum(t.numel() * t.element_size() for t in
                                                      [*model.parameters(), *model.buffers()])
    assert found["neurobench/connection_sparsity"] == 0.0  # trained or not, no weight is exactly zero
    meets, paper = _weight_uses(model, images)
    assert found["neurobench/synops_dense"] == pytest.approx(meets) and meets < paper  # padding: counted by ours only
    rate = measure_memory_inclusive(model, images).firing_rate  # the same spikes, counted by our hooks
    assert 0 < rate < 1 and found["neurobench/activation_sparsity"] == pytest.approx(1 - rate)
    # The first conv sees the image (MACs); the layers after a neuron see spikes (ACs).
    assert 0 < found["neurobench/synops_effective_macs"] < found["neurobench/synops_dense"]
    assert 0 < found["neurobench/synops_effective_acs"] < found["neurobench/synops_dense"]
