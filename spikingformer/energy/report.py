"""What an energy measurement produces: per-layer and per-attention ops, the report, its formatting.

Upstream Spikingformer's energy arithmetic on already-measured numbers: a layer's ACs and MACs at its input rate, each
attention's spike-product ACs (by kind: SSA here, peer families register theirs), totals in G per image and
energy at E_MAC/E_AC. Nothing here touches a model; :mod:`spikingformer.energy.measure` fills these types.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

#: Energy of one 32-bit multiply-accumulate / accumulate at 45 nm, in pJ.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9
#: One G: op counts are reported in G per image, so G ops x pJ = mJ.
GIGA = 1e9


def split_ops(dense: Any, rate: Any, spiking: Any) -> tuple[Any, Any]:
    """(ACs, MACs) of ``dense`` ops at input ``rate``; ``spiking`` is 1 for a spike input, else 0.

    Works on floats and on tensors alike, so the measured and the given-rates paths share it.
    """
    return dense * rate * spiking, dense * (1 - spiking)


@dataclass(frozen=True)
class LayerShape:
    """A counted Conv/Linear layer and its dense ops per image (T included)."""

    name: str
    kind: str
    dense_ops: float


@dataclass(frozen=True)
class LayerOps(LayerShape):
    """A counted layer's ACs and MACs per image."""

    ac_ops: float
    mac_ops: float

    @property
    def input_rate(self) -> float:
        """Mean input firing rate over its spike inputs; 1.0 for a non-spike (MAC) input, as upstream."""
        spiking_dense = self.dense_ops - self.mac_ops
        return self.ac_ops / spiking_dense if spiking_dense > 0 else 1.0

    @classmethod
    def at_rate(cls, shape: LayerShape, rate: float | None) -> LayerOps:
        """Cost ``shape`` at a given input firing rate; ``None`` marks a non-spike input (MACs)."""
        ac, mac = split_ops(shape.dense_ops, 1.0 if rate is None else rate, float(rate is not None))
        return cls(shape.name, shape.kind, shape.dense_ops, ac, mac)


class AttentionCost(Protocol):
    """How one kind of spiking attention is costed: its dense ops and its ACs at given q/k/v rates.

    The default is Spikingformer's SSA; a family whose attention is built otherwise registers
    its own kind with :func:`register_attention_cost` in its model file and names it on the module
    (``energy_attention = "kind"``), so the family brings its own counting.
    """

    def dense_ops(self, shape: AttentionShape) -> float: ...

    def ac_ops(self, shape: AttentionShape, rate_q: float, rate_k: float, rate_v: float | None) -> float: ...


class SpikingSelfAttentionCost:
    """SSA: two softmax-free matmuls K^T.V and Q.(K^T V), each T*h*N*d^2 dense MACs.

    The K.V product is charged at the sparser of K and V, the Q.(KV) product at Q's rate.
    """

    def dense_ops(self, shape: AttentionShape) -> float:
        return 2.0 * shape.time_steps * shape.heads * shape.tokens * shape.head_dim**2

    def ac_ops(self, shape: AttentionShape, rate_q: float, rate_k: float, rate_v: float | None) -> float:
        return self.dense_ops(shape) / 2 * (min(rate_k, rate_v if rate_v is not None else rate_k) + rate_q)


#: Attention kinds by name (a module's ``energy_attention``); families add theirs.
ATTENTION_COSTS: dict[str, AttentionCost] = {"ssa": SpikingSelfAttentionCost()}


def register_attention_cost(kind: str, cost: AttentionCost) -> None:
    """Make ``kind`` known to the energy accounting (called once by the family that defines it)."""
    if kind in ATTENTION_COSTS and ATTENTION_COSTS[kind] is not cost:
        raise ValueError(f"attention cost {kind!r} is already registered")
    ATTENTION_COSTS[kind] = cost


def attention_cost(kind: str) -> AttentionCost:
    if kind not in ATTENTION_COSTS:
        raise ValueError(f"unknown attention kind {kind!r}; registered: {sorted(ATTENTION_COSTS)}")
    return ATTENTION_COSTS[kind]


@dataclass(frozen=True)
class AttentionShape:
    """Geometry of one spiking attention, read at runtime: T, heads, tokens N, head size d, and its kind."""

    name: str
    time_steps: int
    heads: int
    tokens: int
    head_dim: int
    kind: str = field(default="ssa", kw_only=True)

    @property
    def dense_ops(self) -> float:
        """Dense MACs of its spike products per image."""
        return attention_cost(self.kind).dense_ops(self)


@dataclass(frozen=True)
class AttentionOps(AttentionShape):
    """One attention's spike-product ACs per image at the output rates of its q/k(/v) LIFs."""

    rate_q: float
    rate_k: float
    rate_v: float | None

    @property
    def ac_ops(self) -> float:
        return attention_cost(self.kind).ac_ops(self, self.rate_q, self.rate_k, self.rate_v)


@dataclass(frozen=True)
class OpsProfile:
    """Rate-free structure of a model: counted layers, attentions, parameter count."""

    model: str
    layers: list[LayerShape]
    attention: list[AttentionShape]
    params: int

    @property
    def dense_flops(self) -> float:
        """ANN-equivalent conv + linear MACs per image (as upstream's counter gives them)."""
        return sum(layer.dense_ops for layer in self.layers)


@dataclass(frozen=True)
class EnergyReport:
    """Per-layer ops and firing rates of one model, with totals per image.

    ``images`` is None and ``neuron_rates`` empty for a report costed at given rates (no forward pass).
    """

    model: str
    layers: list[LayerOps]
    attention: list[AttentionOps]
    neuron_rates: dict[str, float]
    params: int
    images: int | None
    max_spike_count: int = 1
    #: The energy convention this report was costed under (``EnergyConvention.name``).
    convention: str = "common"
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    top1: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> float:
        return sum(layer.mac_ops for layer in self.layers)

    @property
    def acs(self) -> float:
        """Spike-driven ACs (the paper's "SOPs" / README "FLOPs" column), SSA matmuls included."""
        return sum(layer.ac_ops for layer in self.layers) + sum(a.ac_ops for a in self.attention)

    @property
    def dense_flops(self) -> float:
        """ANN-equivalent conv + linear MACs per image, T included (as upstream's counter gives them)."""
        return sum(layer.dense_ops for layer in self.layers)

    @property
    def energy_mj(self) -> float:
        return self.energy_of(self.macs, self.acs)

    def energy_of(self, macs: float, acs: float) -> float:
        """mJ of ``macs`` MACs plus ``acs`` ACs at this report's energy constants."""
        return (self.e_mac_pj * macs + self.e_ac_pj * acs) / GIGA

    @property
    def firing_rate_mean(self) -> float | None:
        """Mean over LIF layers of each layer's output firing rate (every layer weighs the same); None if unmeasured."""
        rates = list(self.neuron_rates.values())
        return sum(rates) / len(rates) if rates else None

    def saving_vs(self, baseline: EnergyReport) -> float:
        """Fraction of ``baseline``'s energy this model saves (the paper's "x % less energy")."""
        return 1.0 - self.energy_mj / baseline.energy_mj

    def totals(self) -> dict[str, float]:
        """Whole-model figures; the measured-only ones (images, mean rate, top-1) only when measured."""
        totals = {
            "energy_mJ": self.energy_mj,
            "acs_G": self.acs / GIGA,
            "macs_G": self.macs / GIGA,
            "dense_flops_G": self.dense_flops / GIGA,
            "params": float(self.params),
        }
        measured = {"firing_rate_mean": self.firing_rate_mean, "images": self.images, "top1": self.top1}
        return totals | {key: float(value) for key, value in measured.items() if value is not None}

    def to_metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow: the totals, then per-layer rates and op counts."""
        metrics = self.totals()
        for layer in self.layers:
            metrics[f"input_rate/{layer.name}"] = layer.input_rate
            metrics[f"acs_G/{layer.name}"] = layer.ac_ops / GIGA
            metrics[f"macs_G/{layer.name}"] = layer.mac_ops / GIGA
        for attn in self.attention:
            metrics[f"acs_G/{attn.name}"] = attn.ac_ops / GIGA
        for name, rate in self.neuron_rates.items():
            metrics[f"firing_rate/{name}"] = rate
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """Everything, with each row's derived rate, ops and energy spelled out (for a JSON artifact)."""
        return {
            **asdict(self),
            "layers": [
                {**asdict(x), "input_rate": x.input_rate, "energy_mJ": self.energy_of(x.mac_ops, x.ac_ops)}
                for x in self.layers
            ],
            "attention": [
                {**asdict(a), "dense_ops": a.dense_ops, "ac_ops": a.ac_ops, "energy_mJ": self.energy_of(0.0, a.ac_ops)}
                for a in self.attention
            ],
            "totals": self.totals(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        """Markdown: one row per counted layer and SSA (ops in G per image), totals, LIF firing rates."""
        source = "given firing rates" if self.images is None else f"{self.images} images"
        lines = [
            f"## Energy of {self.model} ({source}, per image)",
            "",
            "| layer | type | dense ops (G) | input rate | ACs (G) | MACs (G) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {x.name} | {x.kind} | {x.dense_ops / GIGA:.4f} | {x.input_rate:.4f} | "
            f"{x.ac_ops / GIGA:.4f} | {x.mac_ops / GIGA:.4f} |"
            for x in self.layers
        ]
        lines += [
            f"| {a.name} | {a.kind.upper()} h={a.heads} N={a.tokens} d={a.head_dim} | {a.dense_ops / GIGA:.4f} | "
            f"q {a.rate_q:.4f} k {a.rate_k:.4f}{'' if a.rate_v is None else f' v {a.rate_v:.4f}'} | "
            f"{a.ac_ops / GIGA:.4f} | 0.0000 |"
            for a in self.attention
        ]
        lines += [
            "",
            f"- energy: **{self.energy_mj:.4f} mJ** (E_MAC {self.e_mac_pj} pJ, E_AC {self.e_ac_pj} pJ)",
            f"- ACs (SOPs): {self.acs / GIGA:.4f} G; MACs: {self.macs / GIGA:.4f} G",
            f"- dense conv+linear MACs (ANN equivalent): {self.dense_flops / GIGA:.4f} G",
            f"- convention: {self.convention}; spike test: up to {self.max_spike_count} spike(s) per input element",
            f"- params: {self.params:,}",
        ]
        if self.firing_rate_mean is not None:
            lines.append(f"- mean LIF firing rate: {self.firing_rate_mean:.4f}")
        if self.top1 is not None:
            lines.append(f"- top-1 on these images: {self.top1:.2%}")
        lines += [f"- {note}" for note in self.notes]
        if self.neuron_rates:
            lines += ["", "| LIF | firing rate |", "|---|---:|"]
            lines += [f"| {name} | {rate:.4f} |" for name, rate in self.neuron_rates.items()]
        return "\n".join(lines) + "\n"


