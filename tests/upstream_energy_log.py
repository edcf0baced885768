"""Parse an upstream Spikingformer energy log (``energy_consumption_of_Spikingformer-*_log.txt``).

The log's tail lists every Conv/Linear as ``('name', Module(...), array([dense, ACs, MACs, rate %]))``,
then the hard-coded ``ssa_info``, the per-block [q, k, v] LIF output rates and the totals.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

_LAYER = re.compile(r"^\('(?P<name>[^']+)', .*, array\(\[(?P<values>[^\]]+)\]\)\)$")
_TOTALS = re.compile(r"^Number of operations: (?P<macs>[\d.e+-]+) G MACs, (?P<acs>[\d.e+-]+) G ACs")
_ENERGY = re.compile(r"^Energy consumption: (?P<mj>[\d.e+-]+) mJ")


@dataclass(frozen=True)
class LogLayer:
    name: str
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


def parse_energy_log(path: Path) -> EnergyLog:
    lines = [line.strip() for line in path.read_text().splitlines()]
    layers = []
    for line in lines:
        if match := _LAYER.match(line):
            values = [float(v) for v in match["values"].split(",")]
            layers.append(LogLayer(match["name"], *values))
    after = {line: lines[i + 1] for i, line in enumerate(lines[:-1])}
    totals = next(m for line in lines if (m := _TOTALS.match(line)))
    energy = next(m for line in lines if (m := _ENERGY.match(line)))
    return EnergyLog(
        layers=layers,
        ssa_info=ast.literal_eval(after["SSA info:"]),
        qkv_rates=[tuple(r) for r in ast.literal_eval(after["Firing rate of Q/K/V inputs in each block:"])],
        macs_g=float(totals["macs"]),
        acs_g=float(totals["acs"]),
        energy_mj=float(energy["mj"]),
    )
