"""The field's metric names, measured by NeuroBench itself (``neurobench`` 2.3.0, pinned).

NeuroBench (Yik et al., Nature Communications 2025) defines the static and workload metrics papers now report:
parameter count, footprint (bytes of parameters and buffers), connection sparsity (zero weights of the Linear and
Conv layers), activation sparsity (zero outputs of the spiking neurons, over layers, time steps and samples) and
synaptic operations per sample: ``Dense`` (every weight use of the Linear/Conv layers, bias left out),
``Effective_MACs`` (nonzero input x nonzero weight pairs of layers whose input is not spikes) and ``Effective_ACs``
(the same of layers whose every input is in {-1, 0, 1}). Its hooks see Linear/Conv modules only: the attention's
spike products (torch matmuls) are outside these counts, where the paper conventions include them.

The models run as they are: NeuroBench's ``TorchModel`` hands them the batch as the loader gives it (images, or
``[B, T, 2, H, W]`` event frames), the models repeat and reset over T themselves, and spikingjelly's neurons are
registered as its activation modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from neurobench.benchmarks import Benchmark
from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
from neurobench.models import TorchModel
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch.utils.data import DataLoader, TensorDataset

#: Metric names as logged: ``neurobench/<name>``, NeuroBench's quantities under NeuroBench's definitions.
PREFIX = "neurobench/"
NAMES = {
    "ParameterCount": "parameter_count",
    "Footprint": "footprint_bytes",
    "ConnectionSparsity": "connection_sparsity",
    "ActivationSparsity": "activation_sparsity",
    "Dense": "synops_dense",
    "Effective_MACs": "synops_effective_macs",
    "Effective_ACs": "synops_effective_acs",
}


def neurobench_metrics(model: torch.nn.Module, images: Sequence[torch.Tensor], *, batch_size: int) -> dict[str, float]:
    """NeuroBench's static and workload metrics of ``model`` over ``images`` (in batches of ``batch_size``)."""
    was_training = model.training
    model.eval()
    inputs = torch.stack(list(images))
    loader = DataLoader(TensorDataset(inputs, torch.zeros(len(inputs), dtype=torch.long)), batch_size=batch_size)
    wrapped = TorchModel(model)
    wrapped.add_activation_module(BaseNode)
    metrics = [[ParameterCount, Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations]]
    try:
        device = str(next(model.parameters()).device)
        found = Benchmark(wrapped, loader, [], [], metrics).run(quiet=True, device=device)
    finally:
        model.train(was_training)
    flat = {**found.pop("SynapticOperations"), **found}
    return {PREFIX + NAMES[key]: float(value) for key, value in flat.items()}
