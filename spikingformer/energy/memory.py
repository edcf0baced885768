"""The memory-inclusive convention and the quantized ANN it must beat: does the spiking model save energy at all?

The paper conventions count compute only (4.6 pJ per MAC, 0.9 pJ per AC). On real hardware moving data costs more
than adding it: every synaptic event reads a weight and reads and writes a membrane potential, every neuron reads
and writes its potential each time step, spikes are written and read back (arXiv 2409.08290). This estimate is
spikingjelly's implementation of Lemaire et al. 2022 (arXiv 2210.13107), run one image at a time:

- compute: 32-bit integer adds (0.1 pJ) and multiplies (3.1 pJ) at 45 nm (Horowitz, ISSCC 2014), addressing
  included;
- memory: every access costs its bytes times an SRAM energy per byte interpolated from the buffer's capacity
  (10 / 20 / 100 pJ per 32-bit access at 8 KiB / 32 KiB / 1 MiB; 0 at 0), for the inputs and outputs (spikes),
  the weights and the membrane potentials; in-out FIFOs of 1,000 events.

Its scope is Lemaire's: Conv/Linear synapses and LIF neurons. Normalisation (folded into the weights at inference),
pooling and the attention's spike products (torch matmuls) are left out, on both sides of the comparison.

The baseline is the same network with the same weights as an ANN run once (T = 1), each neuron replaced by a
``b``-bit activation with ``b = ceil(log2(T + 1))``, the bits that carry as much as T binary spikes (arXiv
2409.08290): costed by the same model, with its activation traffic at ``b`` of 32 bits and its multiplies at
``b x 32``-bit (an array multiplier's energy grows with the product of its operand widths: 0.2 pJ at 8x8,
3.1 pJ at 32x32), weights at 32 bits as the spiking model's. The spiking model's energy is affine in its spike
count; measured once as it fires and once with every neuron silent, it gives the firing rate at which it costs
what the ANN does (every layer's rate scaled together): below it the spiking model saves energy, above it not.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from spikingjelly.activation_based.neuron.base_node import BaseNode
from spikingjelly.activation_based.op_counter.analytical_energy import (
    LemaireEnergyConfig,
    LemaireEnergyCostConfig,
    estimate_lemaire_energy,
)
from torch import nn

#: The convention's label (metrics ``*_memory``) and its baseline's (``*_qann``).
MEMORY = "memory"
QANN = "qann"
WORD_BITS = 32


@dataclass(frozen=True)
class MemoryCosts:
    """The access energies and memory hierarchy assumed, with their sources."""

    e_add_pj: float = 0.1
    e_mul_pj: float = 3.1
    #: (capacity in bytes, pJ per byte) interpolation points of an SRAM access.
    sram_pj_per_byte: tuple[tuple[float, float], ...] = (
        (0.0, 0.0), (8 * 1024.0, 10 / 4), (32 * 1024.0, 20 / 4), (1024 * 1024.0, 100 / 4),
    )  # fmt: skip
    fifo_events: int = 1000
    source: str = (
        "Lemaire et al. 2022 (arXiv 2210.13107) as implemented by spikingjelly 2.0.0 "
        "(activation_based.op_counter.LemaireEnergyProfiler): 45 nm, 32-bit integer add 0.1 pJ and multiply "
        "3.1 pJ (Horowitz, ISSCC 2014), SRAM 10/20/100 pJ per 32-bit access at 8 KiB/32 KiB/1 MiB"
    )

    def lemaire(self) -> LemaireEnergyConfig:
        cost = LemaireEnergyCostConfig(self.e_add_pj, self.e_mul_pj, self.sram_pj_per_byte)
        return LemaireEnergyConfig(strict=False, cost_config=cost, snn_fifo_capacity_elements=self.fifo_events)


@dataclass(frozen=True)
class MemoryInclusiveReport:
    """Per-image energies (mJ) of the spiking model and its bit-matched ANN under the memory-inclusive model."""

    model: str
    images: int
    time_steps: int
    #: Spikes over neuron outputs (all LIF layers and time steps together) on the measured images.
    firing_rate: float
    snn_mJ: float
    #: The same model with every neuron silent: what does not scale with spikes (neuron updates, analog inputs).
    snn_silent_mJ: float
    #: compute / addressing / in-out / weights / membrane, mJ per image.
    snn_parts: dict[str, float]
    ann_bits: int | None = None
    ann_mJ: float | None = None
    ann_parts: dict[str, float] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    costs: MemoryCosts = field(default_factory=MemoryCosts)

    @property
    def break_even_rate(self) -> float | None:
        """The firing rate at which the spiking model costs what the ANN does; None without an ANN, 0.0 when the
        silent spiking model already costs more."""
        if self.ann_mJ is None or self.snn_mJ <= self.snn_silent_mJ:
            return None
        return max(0.0, self.firing_rate * (self.ann_mJ - self.snn_silent_mJ) / (self.snn_mJ - self.snn_silent_mJ))

    @property
    def saving(self) -> float | None:
        """Fraction of the ANN's energy the spiking model saves (negative: it costs more)."""
        return None if self.ann_mJ is None else 1.0 - self.snn_mJ / self.ann_mJ

    def metrics(self) -> dict[str, float]:
        out = {f"energy_mJ_{MEMORY}": self.snn_mJ, f"energy_mJ_{MEMORY}_silent": self.snn_silent_mJ,
               "firing_rate_spikes": self.firing_rate}
        if self.ann_mJ is not None:
            out |= {f"energy_mJ_{QANN}": self.ann_mJ, f"{QANN}_bits": float(self.ann_bits)}
        if self.break_even_rate is not None:
            out["break_even_rate"] = self.break_even_rate
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "break_even_rate": self.break_even_rate, "saving": self.saving}

    def to_table(self) -> str:
        """Markdown: both models' energies by part, the break-even rate, the constants."""
        parts = list(self.snn_parts)
        ann = self.ann_parts or dict.fromkeys(parts, math.nan)
        lines = [
            f"## Memory-inclusive energy of {self.model} ({self.images} images, one at a time, per image)", "",
            f"| part | SNN T={self.time_steps} (mJ) | ANN {self.ann_bits or '-'}-bit (mJ) |", "|---|---:|---:|",
            *(f"| {p} | {self.snn_parts[p]:.4g} | {ann[p]:.4g} |" for p in parts),
            f"| **total** | **{self.snn_mJ:.4g}** | **{self.ann_mJ if self.ann_mJ is not None else math.nan:.4g}** |",
            "",
            f"- firing rate (spikes / neuron outputs): {self.firing_rate:.4f}; every neuron silent: "
            f"{self.snn_silent_mJ:.4g} mJ",
        ]  # fmt: skip
        rate = self.break_even_rate
        if self.ann_mJ is None:
            lines.append("- no bit-matched ANN for event inputs (the ANN would need its own encoding of time)")
        elif rate == 0.0:
            lines.append("- the spiking model costs more than the ANN even with every neuron silent")
        elif rate is not None:
            verdict = "saves" if self.firing_rate < rate else "does not save"
            lines.append(f"- break-even firing rate: {rate:.4f}; at {self.firing_rate:.4f} the spiking model {verdict} "
                         f"energy ({100 * self.saving:+.1f} % of the ANN's)")
        lines += [f"- constants: {self.costs.source}", f"- left out (both models): {', '.join(self.left_out) or '-'}"]
        return "\n".join(lines) + "\n"


def _parts(report: Any, *, activation_scale: float = 1.0, multiply_scale: float = 1.0) -> dict[str, float]:
    """A spikingjelly Lemaire report's energy by part, in pJ; ``*_scale`` resize activation traffic and multiplies."""
    cost, counts, energy = report.config.cost_config, report.counts, report.breakdown_pj
    compute = counts["ac"] * cost.e_add_pj + counts["mac"] * (multiply_scale * cost.e_mul_pj + cost.e_add_pj)
    return {"compute": compute, "addressing": energy["addressing_pj"], "in-out": activation_scale * energy["inout_pj"],
            "weights": energy["params_pj"], "membrane": energy["potential_pj"]}


class _Quantize(nn.Module):
    """A ``bits``-bit activation in [0, 1]: the ANN's stand-in for a spiking neuron."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = 2**bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x.clamp(0, 1) * self.levels) / self.levels


def ann_twin(model: nn.Module, bits: int) -> nn.Module:
    """The same network and weights, run once (T = 1), every spiking neuron a ``bits``-bit activation."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseNode):
                setattr(parent, name, _Quantize(bits))
    twin.T = 1
    return twin


@contextmanager
def _silenced(model: nn.Module) -> Iterator[None]:
    """Every neuron's threshold out of reach while inside: the model runs without a spike."""
    neurons = [m for m in model.modules() if isinstance(m, BaseNode)]
    kept = [m.v_threshold for m in neurons]
    for m in neurons:
        m.v_threshold = math.inf
    try:
        yield
    finally:
        for m, v in zip(neurons, kept, strict=True):
            m.v_threshold = v


class _SpikeCount:
    """Spikes and outputs of every neuron while the model runs."""

    def __init__(self, model: nn.Module) -> None:
        self.spikes = self.outputs = 0
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, BaseNode)]

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.spikes += int(output.count_nonzero())
        self.outputs += output.numel()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _lemaire(model: nn.Module, image: torch.Tensor, costs: MemoryCosts) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the left-out modules are listed in the report instead
        return estimate_lemaire_energy(model, image.unsqueeze(0), config=costs.lemaire())


def measure_memory_inclusive(
    model: nn.Module, images: Iterable[torch.Tensor], *, costs: MemoryCosts | None = None
) -> MemoryInclusiveReport:
    """Cost ``model`` (a spiking transformer) and its bit-matched ANN one image at a time over ``images``."""
    costs = costs or MemoryCosts()
    was_training = model.training
    model.eval()
    time_steps = int(model.T)
    bits = math.ceil(math.log2(time_steps + 1))
    static = getattr(model, "input_kind", "static") != "event"
    twin = ann_twin(model, bits) if static else None
    sums: dict[str, dict[str, float]] = {"snn": {}, "silent": {}, "ann": {}}
    left_out: set[str] = set()
    spikes = outputs = n = 0
    try:
        with torch.no_grad():
            for image in images:
                count = _SpikeCount(model)
                try:
                    runs = {"snn": _parts(_lemaire(model, image, costs))}
                finally:
                    count.close()
                spikes, outputs = spikes + count.spikes, outputs + count.outputs
                with _silenced(model):
                    runs["silent"] = _parts(_lemaire(model, image, costs))
                if twin is not None:
                    report = _lemaire(twin, image, costs)
                    runs["ann"] = _parts(report, activation_scale=bits / WORD_BITS, multiply_scale=bits / WORD_BITS)
                    left_out.update(w.split(" support ")[1].split(";")[0] for w in report.warnings)
                for key, parts in runs.items():
                    for part, pj in parts.items():
                        sums[key][part] = sums[key].get(part, 0.0) + pj
                n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("measure_memory_inclusive: no images")
    mj = {key: {part: pj / n / 1e9 for part, pj in parts.items()} for key, parts in sums.items()}
    firing_rate = spikes / outputs
    return MemoryInclusiveReport(
        model=type(model).__name__, images=n, time_steps=time_steps, firing_rate=firing_rate,
        snn_mJ=sum(mj["snn"].values()), snn_silent_mJ=sum(mj["silent"].values()), snn_parts=mj["snn"],
        ann_bits=bits if twin is not None else None, ann_mJ=sum(mj["ann"].values()) if twin is not None else None,
        ann_parts=mj["ann"], left_out=sorted(left_out - {"_Quantize"}), costs=costs,
    )
