"""SNN energy accounting with the rules of upstream Spikingformer's energy script, under each family's conventions.

Only Conv1d/Conv2d/Linear layers and the spiking attentions' spike products enter the energy:

- a layer whose input is a spike tensor costs ACs = dense ops x input firing rate;
- any other layer (the analog first conv, the real-valued head) costs MACs = all its dense ops;
- each attention adds the ACs of its spike products at the output rates of its q/k/v LIFs (SSA:
  ``T * heads * N * d^2 * (min(rate_k, rate_v) + rate_q)``; a peer family registers its own kind);
- energy = E_MAC * MACs + E_AC * ACs (4.6 pJ and 0.9 pJ, 45 nm, Horowitz 2014), in mJ.

:mod:`~spikingformer.energy.conventions` says what counts as a spike and how often the first layer
is charged (each family declares its paper's convention; :data:`COMMON` is the one ruler for all),
:mod:`~spikingformer.energy.report` holds the result types and their formatting, and
:mod:`~spikingformer.energy.measure` the forward hooks that fill them.
"""

from spikingformer.energy.conventions import COMMON, EnergyConvention
from spikingformer.energy.measure import (
    COUNTED_LAYERS,
    dense_ops,
    energy_from_rates,
    measure_conventions,
    measure_energy,
    profile_ops,
    spike_flags,
)
from spikingformer.energy.report import (
    ATTENTION_COSTS,
    E_AC_PJ,
    E_MAC_PJ,
    GIGA,
    AttentionCost,
    AttentionOps,
    AttentionShape,
    EnergyReport,
    LayerOps,
    LayerShape,
    OpsProfile,
    SpikingSelfAttentionCost,
    register_attention_cost,
    split_ops,
)

__all__ = [
    "ATTENTION_COSTS",
    "COMMON",
    "COUNTED_LAYERS",
    "E_AC_PJ",
    "E_MAC_PJ",
    "GIGA",
    "AttentionCost",
    "AttentionOps",
    "AttentionShape",
    "EnergyConvention",
    "EnergyReport",
    "LayerOps",
    "LayerShape",
    "OpsProfile",
    "SpikingSelfAttentionCost",
    "dense_ops",
    "energy_from_rates",
    "measure_conventions",
    "measure_energy",
    "profile_ops",
    "register_attention_cost",
    "spike_flags",
    "split_ops",
]
