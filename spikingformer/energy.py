"""SNN energy accounting with the upstream Spikingformer rules (SPEC §5).

Only Conv1d/Conv2d/Linear layers and the spiking self-attention (SSA) matmuls enter the energy:

- a layer whose input is a spike tensor costs ACs = dense ops x input firing rate;
- any other layer (the analog first conv, the real-valued head) costs MACs = all its dense ops;
- each SSA adds ``T * heads * N * d^2 * (min(rate_k, rate_v) + rate_q)`` ACs, with the output rates of
  its q/k/v LIFs (the K.V product charged at the sparser of K and V, the Q.(KV) product at Q's rate);
- energy = E_MAC * MACs + E_AC * ACs (4.6 pJ and 0.9 pJ, 45 nm, Horowitz 2014), in mJ.

Dense ops follow the upstream counter (syops): every weight MAC plus one op per output for a bias, with
T folded into the batch, all per image. Two entry points share this arithmetic: :func:`measure_energy`
runs a model over a loader with forward hooks (:func:`measure_conventions`: under several spike-test
conventions in one pass), :func:`energy_from_rates` costs a model at given firing rates (to replay an
upstream log). :func:`profile_ops` gives the dense ops from a meta-device forward.
"""

from __future__ import annotations

import itertools
import json
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from spikingformer.neurons import MultiStepLIF

#: Energy of one 32-bit multiply-accumulate / accumulate at 45 nm, in pJ.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9
#: The layer types whose ops enter the energy (upstream: modules named "conv*" or "head").
COUNTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
#: One G: op counts are reported in G per image, so G ops x pJ = mJ.
GIGA = 1e9


def dense_ops(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """Upstream dense count of one Conv/Linear call: the weight MACs, plus one op per output with a bias."""
    if isinstance(module, nn.Linear):
        ops = inputs.numel() * module.out_features
    else:
        ops = math.prod(module.kernel_size) * (module.in_channels // module.groups) * output.numel()
    return ops + (output.numel() if module.bias is not None else 0)


def spike_flags(x: torch.Tensor, max_spike_counts: Sequence[int]) -> torch.Tensor:
    """Whether ``x`` counts as spikes under each convention: float64 1/0 per count, no host sync.

    Upstream (``Nspks_max = 1``): at most two distinct values, all within [0, 1]. With a larger count
    (upstream's alternative ``Nspks_max = 30``), integer spike counts in [0, count] also pass. A few float
    passes replace upstream's costly ``unique``; they are exact: with gradual underflow ``a - b == 0``
    only when ``a == b``, so every element equals lo or hi iff its distance to the nearer one is 0.
    """
    lo, hi = torch.aminmax(x)
    gap = x - lo
    two_valued = torch.minimum(gap, torch.sub(hi, x), out=gap).amax() == 0
    integer = x.round().sub_(x).abs_().amax() == 0 if max(max_spike_counts) > 1 else None
    flags = [(lo >= 0) & (hi <= k) & (two_valued if k == 1 else two_valued | integer) for k in max_spike_counts]
    return torch.stack(flags).double()


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


@dataclass(frozen=True)
class AttentionShape:
    """Geometry of one spiking self-attention, read at runtime: T, heads, tokens N, head size d."""

    name: str
    time_steps: int
    heads: int
    tokens: int
    head_dim: int

    @property
    def dense_ops(self) -> float:
        """Dense MACs of the two matmuls per image: K^T.V and Q.(K^T V)."""
        return 2.0 * self.time_steps * self.heads * self.tokens * self.head_dim**2


@dataclass(frozen=True)
class AttentionOps(AttentionShape):
    """One SSA's matmul ACs per image at the output rates of its q/k/v LIFs."""

    rate_q: float
    rate_k: float
    rate_v: float

    @property
    def ac_ops(self) -> float:
        return self.dense_ops / 2 * (min(self.rate_k, self.rate_v) + self.rate_q)


@dataclass(frozen=True)
class OpsProfile:
    """Rate-free structure of a model: counted layers, attentions, parameter count."""

    model: str
    layers: list[LayerShape]
    attention: list[AttentionShape]
    params: int

    @property
    def dense_flops(self) -> float:
        """ANN-equivalent conv + linear MACs per image (SPEC §4's table)."""
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
        """ANN-equivalent conv + linear MACs per image, T included (SPEC §4)."""
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
            f"| {a.name} | SSA matmuls h={a.heads} N={a.tokens} d={a.head_dim} | {a.dense_ops / GIGA:.4f} | "
            f"q {a.rate_q:.4f} k {a.rate_k:.4f} v {a.rate_v:.4f} | {a.ac_ops / GIGA:.4f} | 0.0000 |"
            for a in self.attention
        ]
        lines += [
            "",
            f"- energy: **{self.energy_mj:.4f} mJ** (E_MAC {self.e_mac_pj} pJ, E_AC {self.e_ac_pj} pJ)",
            f"- ACs (SOPs): {self.acs / GIGA:.4f} G; MACs: {self.macs / GIGA:.4f} G",
            f"- dense conv+linear MACs (ANN equivalent): {self.dense_flops / GIGA:.4f} G",
            f"- spike test: up to {self.max_spike_count} spike(s) per input element",
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


def _attention_modules(model: nn.Module) -> dict[nn.Module, str]:
    """SSA modules, recognised by their q/k/v LIFs and head count rather than by name."""
    return {
        module: name
        for name, module in model.named_modules()
        if isinstance(getattr(module, "num_heads", None), int)
        and all(isinstance(getattr(module, f"{p}_lif", None), MultiStepLIF) for p in "qkv")
    }


class _TensorStats:
    """Sum and spike flags of each tensor one forward reads, computed once per tensor, kept on its device.

    q, k and v read one tensor, and a LIF's output is the next conv's input (a view of it), so keying by
    memory rather than by tensor object saves most of the reductions. A key is (device, dtype, address,
    size, version counter) of a contiguous tensor: two such tensors cover the same elements in the same
    order, and an in-place write bumps the version. An entry is used only while the tensor it was made
    from is alive, so memory freed and reused by a new tensor never matches. Cleared every forward.
    """

    def __init__(self, max_spike_counts: tuple[int, ...]) -> None:
        self.max_spike_counts = max_spike_counts
        self.entries: dict[tuple, tuple[weakref.ref, dict[str, torch.Tensor]]] = {}

    def clear(self, *_: object) -> None:
        self.entries.clear()

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The entry of ``x``: ``sum`` always (fp32, as the plain sum), ``flags`` filled by :meth:`flags`."""
        shareable = x.is_contiguous() and not x.is_inference()
        key = (x.device, x.dtype, x.data_ptr(), x.numel(), x._version) if shareable else None
        entry = self.entries.get(key)
        if entry is not None and entry[0]() is not None:
            return entry[1]
        stats = {"sum": x.sum()}
        if key is not None:
            self.entries[key] = (weakref.ref(x), stats)
        return stats

    def flags(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, spike flags per convention) of ``x``."""
        stats = self(x)
        if "flags" not in stats:
            stats["flags"] = spike_flags(x, self.max_spike_counts)
        return stats["sum"], stats["flags"]


class _Recorder:
    """Forward hooks that tally dense ops (always) and, given spike-test conventions, spike statistics.

    ACs and MACs accumulate per layer as float64 tensors of one value per convention on the model's
    device, so no hook waits for the device; the totals are read once, at the end.
    """

    def __init__(self, model: nn.Module, max_spike_counts: tuple[int, ...] | None) -> None:
        names = {module: name for name, module in model.named_modules()}
        self.model = model
        self.stats = _TensorStats(max_spike_counts) if max_spike_counts else None
        self.layers = {m: names[m] for m in model.modules() if isinstance(m, COUNTED_LAYERS)}
        self.neurons = {m: names[m] for m in model.modules() if isinstance(m, MultiStepLIF)}
        self.attention = _attention_modules(model)
        self.qkv_owner = {getattr(a, f"{p}_lif"): a for a in self.attention for p in "qkv"}
        self.dense: dict[nn.Module, int] = dict.fromkeys(self.layers, 0)
        self.ac: dict[nn.Module, torch.Tensor | float] = dict.fromkeys(self.layers, 0.0)
        self.mac: dict[nn.Module, torch.Tensor | float] = dict.fromkeys(self.layers, 0.0)
        self.spikes: dict[nn.Module, torch.Tensor | float] = dict.fromkeys(self.neurons, 0.0)
        self.neuron_elements: dict[nn.Module, int] = dict.fromkeys(self.neurons, 0)
        self.geometry: dict[nn.Module, AttentionShape] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _Recorder:
        self.handles = [m.register_forward_hook(self._layer_hook) for m in self.layers]
        self.handles += [m.register_forward_hook(self._neuron_hook) for m in self.neurons]
        if self.stats is not None:
            self.handles.append(self.model.register_forward_pre_hook(self.stats.clear))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        if self.stats is not None:
            self.stats.clear()

    def _layer_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        ops = dense_ops(module, x, output)
        self.dense[module] += ops
        if self.stats is None:
            return
        total, spiking = self.stats.flags(x)
        ac, mac = split_ops(ops, total.double() / x.numel(), spiking)
        self.ac[module] = self.ac[module] + ac
        self.mac[module] = self.mac[module] + mac

    def _neuron_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.neuron_elements[module] += output.numel()
        if self.stats is not None:
            self.spikes[module] = self.spikes[module] + self.stats(output)["sum"].double()
        owner = self.qkv_owner.get(module)
        if owner is not None and owner not in self.geometry:
            # q/k/v LIF outputs are [T, B, D, N]; heads come from the attention module.
            t, _, dim, tokens = output.shape
            heads = owner.num_heads
            self.geometry[owner] = AttentionShape(self.attention[owner], t, heads, tokens, dim // heads)

    def layer_shapes(self, images: int) -> list[LayerShape]:
        return [LayerShape(name, type(m).__name__, self.dense[m] / images) for m, name in self.layers.items()]

    def attention_shapes(self) -> list[AttentionShape]:
        return [self.geometry[a] for a in self.attention if a in self.geometry]

    def layer_ops(self, images: int) -> list[list[LayerOps]]:
        """Per-layer ops, one list per spike-test convention."""

        def per_image(total: torch.Tensor | float) -> list[float]:
            values = total.tolist() if isinstance(total, torch.Tensor) else [total] * len(self.stats.max_spike_counts)
            return [v / images for v in values]

        ops = {m: zip(per_image(self.ac[m]), per_image(self.mac[m]), strict=True) for m in self.layers}
        by_layer = [
            [LayerOps(s.name, s.kind, s.dense_ops, ac, mac) for ac, mac in ops[m]]
            for s, m in zip(self.layer_shapes(images), self.layers, strict=True)
        ]
        return [list(layers) for layers in zip(*by_layer, strict=True)]

    def rate(self, neuron: nn.Module) -> float:
        return float(self.spikes[neuron]) / self.neuron_elements[neuron]

    def neuron_rates(self) -> dict[str, float]:
        return {name: self.rate(m) for m, name in self.neurons.items() if self.neuron_elements[m]}

    def attention_ops(self) -> list[AttentionOps]:
        return [
            AttentionOps(**asdict(self.geometry[a]), **_qkv(*(self.rate(getattr(a, f"{p}_lif")) for p in "qkv")))
            for a in self.attention
            if a in self.geometry
        ]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def profile_ops(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> OpsProfile:
    """Dense ops per layer and SSA geometry from one forward on the meta device: no compute, no weights.

    ``input_shape`` (one sample, no batch axis) defaults to the model's ``input_shape``.
    """
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} has no input_shape; pass input_shape")
    meta_state = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
    with _Recorder(model, None) as rec, torch.no_grad():
        functional_call(model, meta_state, (torch.empty(1, *shape, device="meta"),))
    return OpsProfile(type(model).__name__, rec.layer_shapes(1), rec.attention_shapes(), _params(model))


def energy_from_rates(
    profile: OpsProfile,
    input_rates: Mapping[str, float | None],
    qkv_rates: Mapping[str, tuple[float, float, float]],
    *,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
) -> EnergyReport:
    """Cost a profiled model at given firing rates (e.g. read from an upstream energy log).

    ``input_rates`` maps every counted layer to its input firing rate, ``None`` for a non-spike input;
    ``qkv_rates`` maps every SSA to its (q, k, v) LIF output rates.
    """
    for what, given, expected in (
        ("input_rates", input_rates, [s.name for s in profile.layers]),
        ("qkv_rates", qkv_rates, [a.name for a in profile.attention]),
    ):
        if set(given) != set(expected):
            missing, unknown = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
            raise ValueError(f"{what} must cover exactly the model's layers: missing {missing}, unknown {unknown}")
    return EnergyReport(
        model=profile.model,
        layers=[LayerOps.at_rate(s, input_rates[s.name]) for s in profile.layers],
        attention=[AttentionOps(**asdict(a), **_qkv(*qkv_rates[a.name])) for a in profile.attention],
        neuron_rates={},
        params=profile.params,
        images=None,
        e_mac_pj=e_mac_pj,
        e_ac_pj=e_ac_pj,
        notes=["costed at given firing rates (no forward pass)"],
    )


def _qkv(q: float, k: float, v: float) -> dict[str, float]:
    return {"rate_q": q, "rate_k": k, "rate_v": v}


def _split_batch(item: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        target = item[1] if len(item) > 1 and isinstance(item[1], torch.Tensor) else None
        return item[0], target
    raise ValueError(f"a loader must yield input tensors or (inputs, targets) pairs, got {type(item).__name__}")


def measure_energy(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    max_batches: int | None = None,
    max_spike_count: int = 1,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
) -> EnergyReport:
    """Run ``model`` over ``loader`` (eval, fp32, no grad) and account its ops, rates and energy.

    Per-batch statistics are summed and divided by the number of images, i.e. batches are weighted by
    their image count (upstream averaged per-batch rates; the two agree when all batches are full).
    A batch that does not match the model's ``input_shape`` raises ``ValueError`` before it runs, and
    no report comes back; the hooks are removed and the model's train/eval mode restored either way.
    """
    (report,) = measure_conventions(
        model, loader, (max_spike_count,), max_batches=max_batches, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj
    )
    return report


def measure_conventions(
    model: nn.Module,
    loader: Iterable[Any],
    max_spike_counts: Sequence[int],
    *,
    max_batches: int | None = None,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
) -> list[EnergyReport]:
    """:func:`measure_energy` under several spike-test conventions at once: one pass, one report each.

    For Spikformer, whose residual stream of spike sums is MACs under ``max_spike_count=1`` and ACs
    under upstream's alternative 30, ``(1, 30)`` gives both of the paper's baselines.
    """
    counts = tuple(max_spike_counts)
    if not counts or min(counts) < 1:
        raise ValueError(f"max_spike_count must be >= 1, got {list(counts)}")
    param = next(model.parameters())
    if param.dtype != torch.float32:
        raise ValueError(f"energy accounting runs in fp32; the model's parameters are {param.dtype}")
    expected = getattr(model, "input_shape", None)
    was_training = model.training
    model.eval()
    images, labelled = 0, 0
    correct = torch.zeros((), dtype=torch.int64, device=param.device)
    try:
        with (
            _Recorder(model, counts) as rec,
            torch.no_grad(),
            torch.autocast(param.device.type, enabled=False),
        ):
            for index, item in enumerate(itertools.islice(loader, max_batches)):
                x, target = _split_batch(item)
                if expected is not None and tuple(x.shape[1:]) != tuple(expected):
                    raise ValueError(
                        f"batch {index}: {type(model).__name__} expects inputs of shape [B, "
                        f"{', '.join(map(str, expected))}], the loader gave {list(x.shape)}"
                    )
                logits = model(x.to(param.device, torch.float32))
                images += x.shape[0]
                if target is not None:
                    correct += (logits.argmax(-1) == target.to(param.device)).sum()
                    labelled += target.shape[0]
    finally:
        model.train(was_training)
    if images == 0:
        raise ValueError("the loader yielded no batches")
    common = dict(
        model=type(model).__name__,
        attention=rec.attention_ops(),
        neuron_rates=rec.neuron_rates(),
        params=_params(model),
        images=images,
        e_mac_pj=e_mac_pj,
        e_ac_pj=e_ac_pj,
        top1=int(correct) / labelled if labelled else None,
    )
    return [
        EnergyReport(layers=layers, max_spike_count=count, **common)
        for count, layers in zip(counts, rec.layer_ops(images), strict=True)
    ]
