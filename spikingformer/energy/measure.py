"""Measuring ops, firing rates and energy with forward hooks on the model itself (upstream Spikingformer's rules).

Dense ops follow the upstream counter (syops): every weight MAC plus one op per output for a bias, with
T folded into the batch, all per image. Two entry points share the arithmetic of
:mod:`spikingformer.energy.report`: :func:`measure_conventions` runs a model over a loader under several
energy conventions in one pass (:func:`measure_energy`: one), :func:`energy_from_rates` costs a model at
given firing rates (to replay an upstream log). :func:`profile_ops` gives the dense ops from a meta-device
forward. Attentions are found by what they declare (``energy_attention``, a registered kind) and their
q/k(/v) LIFs, never by class, so a new family's attention is counted without changes here.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from spikingformer.energy.conventions import COMMON, EnergyConvention
from spikingformer.energy.report import (
    E_AC_PJ,
    E_MAC_PJ,
    AttentionOps,
    AttentionShape,
    EnergyReport,
    LayerOps,
    LayerShape,
    OpsProfile,
    attention_cost,
    split_ops,
)
from spikingformer.neurons import MultiStepLIF

#: The layer types whose ops enter the energy (upstream: modules named "conv*" or "head").
COUNTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


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


def _attention_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Spiking attentions: modules that name their kind (``energy_attention``) and own q and k LIFs."""
    found = {}
    for name, module in model.named_modules():
        kind = getattr(module, "energy_attention", None)
        if isinstance(kind, str) and all(isinstance(getattr(module, f"{p}_lif", None), MultiStepLIF) for p in "qk"):
            attention_cost(kind)  # an unknown kind fails here, naming the registered ones
            found[module] = name
    return found


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
        self.qkv_owner = {getattr(a, f"{p}_lif"): a for a in self.attention for p in "qk"}
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
            # q/k LIF outputs are [T, B, D, *tokens]; heads come from the attention module (1 if it has none).
            t, _, dim = output.shape[:3]
            heads = getattr(owner, "num_heads", 1)
            self.geometry[owner] = AttentionShape(
                self.attention[owner], t, heads, math.prod(output.shape[3:]), dim // heads,
                kind=owner.energy_attention,
            )

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
            AttentionOps(**asdict(self.geometry[a]), **_qkv(*(self._rate_of(a, p) for p in "qkv")))
            for a in self.attention
            if a in self.geometry
        ]

    def _rate_of(self, attention: nn.Module, which: str) -> float | None:
        neuron = getattr(attention, f"{which}_lif", None)
        return self.rate(neuron) if isinstance(neuron, MultiStepLIF) else None


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


def _qkv(q: float, k: float, v: float | None = None) -> dict[str, float | None]:
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
    convention: EnergyConvention = COMMON,
    max_batches: int | None = None,
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
        model, loader, (convention,), max_batches=max_batches, e_mac_pj=e_mac_pj, e_ac_pj=e_ac_pj
    )
    return report


def measure_conventions(
    model: nn.Module,
    loader: Iterable[Any],
    conventions: Sequence[EnergyConvention],
    *,
    max_batches: int | None = None,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
) -> list[EnergyReport]:
    """:func:`measure_energy` under several conventions at once: one pass, one report each, in order.

    E.g. a family's paper convention and :data:`COMMON`; for Spikingformer's baseline Spikformer, whose
    residual stream of spike sums is MACs under a spike test of 1 and ACs under upstream's alternative 30,
    both of the paper's baselines.
    """
    conventions = tuple(conventions)
    if not conventions:
        raise ValueError("measure_conventions needs at least one convention")
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
            _Recorder(model, tuple(c.max_spike_count for c in conventions)) as rec,
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
    time_steps = getattr(model, "T", 1)
    return [
        EnergyReport(
            layers=_first_layer_once(layers, time_steps) if convention.first_layer_once else layers,
            max_spike_count=convention.max_spike_count,
            convention=convention.name,
            **common,
        )
        for convention, layers in zip(conventions, rec.layer_ops(images), strict=True)
    ]


def _first_layer_once(layers: list[LayerOps], time_steps: int) -> list[LayerOps]:
    """The first counted layer charged once per image instead of once per time step."""
    if not layers:
        return layers
    first = layers[0]
    once = replace(
        first, dense_ops=first.dense_ops / time_steps, ac_ops=first.ac_ops / time_steps,
        mac_ops=first.mac_ops / time_steps,
    )
    return [once, *layers[1:]]
