"""Energy conventions: how a paper turned measured spikes into ACs and MACs, declared by each model family.

Papers of spiking transformers cost their models under slightly different rules (each paper's
appendix or supplementary): whether the first, analog conv's MACs count once per time step or once, and whether integer
spike counts (Spikformer's and QKFormer's residual streams) are ACs weighted by value or MACs. A family
declares its paper's convention (``SpikingTransformer.PAPER_ENERGY``) and any further ones worth reporting;
every model is also costed under :data:`COMMON`, Spikingformer's rules applied to all, so that
families are compared on one ruler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnergyConvention:
    """One way of counting: the spike test and the first layer's time steps."""

    name: str
    #: Inputs whose values are integers in [0, max_spike_count] count as spikes (ACs weighted by value);
    #: 1 is upstream Spikingformer's test (at most two values, within [0, 1]).
    max_spike_count: int = 1
    #: The first counted layer (the analog encoding conv) costs its MACs once per image rather than once per
    #: time step (QKFormer's paper writes E_MAC x FLOP_conv1 with no T; Spikingformer's calculator has T).
    first_layer_once: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.max_spike_count < 1:
            raise ValueError(f"max_spike_count must be >= 1, got {self.max_spike_count}")


#: The common ruler: Spikingformer's energy script: binary spikes only, the first conv once per step.
COMMON = EnergyConvention(
    "common",
    description="Spikingformer's rules for every family: binary spike inputs are ACs, any other input "
    "(the analog first conv, integer spike counts, the head on real values) MACs; the first conv per time step",
)
