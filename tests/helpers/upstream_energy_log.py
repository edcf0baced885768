"""The upstream Spikingformer energy logs, as the repository keeps them (``reference/upstream_energy/*.json``).

``reference/extract_energy.py`` extracted them from the published logs (provenance in each file): every counted
Conv/Linear with its dense ops, ACs, MACs and input rate, the hard-coded ``ssa_info``, the per-block [q, k, v] LIF
output rates and the printed totals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "reference" / "upstream_energy"


@dataclass(frozen=True)
class LogLayer:
    name: str
    kind: str
    dense_ops: float
    ac_ops: float
    mac_ops: float
    rate_percent: float


@dataclass(frozen=True)
class EnergyLog:
    layers: list[LogLayer]
    ssa_info: dict
    qkv_rates: list[tuple[float, float, float]]
    macs_g: float
    acs_g: float
    energy_mj: float


def load_energy_log(model: str) -> EnergyLog:
    """The extracted energy log of one upstream model (``spikingformer_8_512`` or ``spikingformer_8_768``)."""
    data = json.loads((REFERENCE / f"{model}.json").read_text())
    return EnergyLog(
        layers=[LogLayer(**layer) for layer in data["layers"]],
        ssa_info=data["ssa_info"],
        qkv_rates=[tuple(rates) for rates in data["qkv_rates"]],
        macs_g=data["macs_G"],
        acs_g=data["acs_G"],
        energy_mj=data["energy_mJ"],
    )
