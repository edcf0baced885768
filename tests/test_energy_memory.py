"""The memory-inclusive convention and its bit-matched quantized ANN (``spikingformer.energy.memory``): the spiking
side is spikingjelly's Lemaire profiler exactly, the ANN twin is the same network at T=1 without a neuron, and the
break-even firing rate follows from the spiking model measured firing and silent."""

from __future__ import annotations

import json
import math

import pytest
import torch
from spikingjelly.activation_based.neuron.base_node import BaseNode
from spikingjelly.activation_based.op_counter.analytical_energy import estimate_lemaire_energy

from harness.experiment.objectives import Objective, check_reported
from spikingformer import evaluate
from spikingformer._validation import ConfigError
from spikingformer.config import ModelConfig
from spikingformer.energy import memory
from spikingformer.energy.memory import MemoryCosts, MemoryInclusiveReport, ann_twin, measure_memory_inclusive
from spikingformer.models import build_model

TINY = {"num_classes": 10, "embed_dim": 32, "depth": 1, "num_heads": 2}


def _firing(name: str, threshold: float = 0.05, **kwargs: object) -> torch.nn.Module:
    """A tiny model whose neurons fire at a low threshold (random weights rarely reach 1.0)."""
    torch.manual_seed(0)
    model = build_model(name, **TINY, **kwargs)
    for module in model.modules():
        if isinstance(module, BaseNode):
            module.v_threshold = threshold
    return model.eval()


@pytest.mark.filterwarnings("ignore:Lemaire formulas do not support:RuntimeWarning")  # the direct call below
@pytest.mark.parametrize("name", ["spikingformer_cifar_2_384", "spikformer_cifar_2_384", "sdt_cifar_2_512"])
def test_spiking_side_is_the_lemaire_profiler_and_the_ann_costs_what_its_bits_say(name: str) -> None:
    model = _firing(name, T=2)
    images = torch.randn(2, 3, 32, 32)
    report = measure_memory_inclusive(model, images)
    assert 0.01 < report.firing_rate < 0.9  # the spikes are alive
    direct = [estimate_lemaire_energy(model, x[None], config=MemoryCosts().lemaire()).total_pj for x in images]
    assert report.snn_mJ == pytest.approx(sum(direct) / 2 / 1e9, rel=1e-9)
    assert report.snn_silent_mJ < report.snn_mJ and report.snn_parts["membrane"] > 0
    assert report.ann_bits == 2 and report.ann_mJ > 0 and report.ann_parts["membrane"] == 0  # no neuron state
    rate = report.break_even_rate
    # At the break-even rate the affine spiking energy equals the ANN's.
    affine = report.snn_silent_mJ + (report.snn_mJ - report.snn_silent_mJ) * rate / report.firing_rate
    assert rate == 0.0 or affine == pytest.approx(report.ann_mJ)
    assert (report.saving > 0) == (report.firing_rate < rate)
    table = report.to_table()
    assert "break-even firing rate" in table or "even with every neuron silent" in table
    assert "SRAM 10/20/100 pJ per 32-bit access" in table and "BatchNorm2d" in table  # constants and scope printed


def test_ann_twin_runs_once_without_a_neuron_and_keeps_the_weights() -> None:
    model = _firing("spikingformer_cifar_2_384", T=4)
    twin = ann_twin(model, bits=3)
    assert twin.T == 1 and model.T == 4 and not any(isinstance(m, BaseNode) for m in twin.modules())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True))
    with torch.no_grad():
        assert twin(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    activations = []
    hook = next(m for m in twin.modules() if type(m).__name__ == "_Quantize").register_forward_hook(
        lambda module, inputs, output: activations.append(output))
    with torch.no_grad():
        twin(torch.randn(1, 3, 32, 32))
    hook.remove()
    levels = torch.unique(activations[0] * 7)  # 3 bits: multiples of 1/7 in [0, 1]
    assert torch.allclose(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 7
    assert measure_memory_inclusive(model, torch.randn(1, 3, 32, 32)).ann_bits == 3  # ceil(log2(4 + 1))


def test_event_input_has_no_ann_and_the_report_says_so() -> None:
    torch.manual_seed(0)
    model = build_model("spikingformer_dvs_2_256", num_classes=10, embed_dim=32, depth=1, num_heads=2, T=2)
    events = (torch.rand(1, 2, 2, 128, 128) < 0.1).float()
    report = measure_memory_inclusive(model, events)
    assert report.ann_mJ is None and report.break_even_rate is None and report.snn_mJ > 0
    assert "no bit-matched ANN for event inputs" in report.to_table()
    assert "energy_mJ_qann" not in report.metrics() and report.metrics()["energy_mJ_memory"] == report.snn_mJ


def test_break_even_edge_cases() -> None:
    base = {"model": "m", "images": 1, "time_steps": 4, "firing_rate": 0.1, "snn_parts": {}, "ann_bits": 3}
    costly = MemoryInclusiveReport(**base, snn_mJ=2.0, snn_silent_mJ=1.5, ann_mJ=1.0)
    assert costly.break_even_rate == 0.0 and costly.saving == pytest.approx(-1.0)
    cheap = MemoryInclusiveReport(**base, snn_mJ=1.0, snn_silent_mJ=0.5, ann_mJ=3.0)
    assert cheap.break_even_rate == pytest.approx(0.5) and math.isclose(cheap.saving, 2 / 3)


def test_the_memory_inclusive_figures_are_named_as_a_convention_a_search_can_minimise() -> None:
    named = evaluate.figure(evaluate.ENERGY_MJ, evaluate.MEMORY)
    assert named == evaluate.ENERGY_MJ_MEMORY == f"energy_mJ_{memory.MEMORY}"
    model = ModelConfig(name="spikingformer_cifar_2_384")
    objective = Objective(name="energy_mJ", mode="min", convention="memory")
    check_reported((objective,), model, "search.yaml")
    assert objective.figure == "energy_mJ_memory"
    with pytest.raises(ConfigError, match="'memory' is not reported by spikingformer_cifar_2_384 for sops_G"):
        check_reported((Objective(name="sops_G", mode="min", convention="memory"),), model, "search.yaml")


def test_sfh_energy_prints_the_memory_inclusive_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    from spikingformer.energy.cli import main

    args = ["--model", "spikingformer_cifar_2_384", "--num-classes", "10", "--T", "1", "--data", "synthetic:2",
            "--memory", "1", "--device", "cpu", "--format", "json"]
    assert main(args) == 0
    found = json.loads(capsys.readouterr().out)["memory_inclusive"]
    assert found["images"] == 1 and found["ann_bits"] == 1 and found["snn_mJ"] > 0 and found["ann_mJ"] > 0
    assert "Lemaire et al. 2022" in found["costs"]["source"]
