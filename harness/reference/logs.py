"""Parsers of the training and energy logs the authors published beside their code.

Run once by :mod:`harness.reference.extract`, which turns each log into a data file of this repository; nothing
reads a log at run or report time. Four formats:

- timm 0.6 ``train.py`` (ImageNet 8-512, 8-768): every line is printed twice, once with an
  ``INFO:<logger>:`` prefix; an epoch is its ``Train: <epoch> [i/n]`` lines followed by the
  ``Test: [n/n]`` line whose bracketed values are the epoch's averages.
- the SEW-ResNet-style DVS ``train.py`` (CIFAR10-DVS): ``Epoch: [<epoch>] [i/n] ... loss: x (avg)``
  lines, then `` * Acc@1 = a, Acc@5 = b, loss = c`` for the test pass.
- the MAE-style ``main_finetune.py`` (QKFormer ImageNet): ``Averaged stats: lr: x  loss: y (avg)`` closes an
  epoch's training, `` * Acc@1 a Acc@5 b loss c`` its test pass; the epoch is that of the last
  ``Epoch: [<epoch>]`` line before them.
- the energy script (``energy_consumption_of_*_log.txt``): one ``('name', Module(...), array([dense,
  ACs, MACs, rate%]))`` tuple per counted layer, then the totals.

Epochs are numbered as in the logs (from 0). Nothing here is copied by hand: the tests check the parsed
numbers against the figures the logs' own summary lines print (best metric and its epoch).
"""

from __future__ import annotations

import ast
import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any

from harness.reference.curves import REFERENCE_DIR

# The energy script's constants (45 nm, Horowitz 2014): E = 4.6 pJ per MAC + 0.9 pJ per AC; G ops x pJ = mJ.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9

_PREFIX = r"^(?:INFO:[\w.]+:)?"
_FLOAT = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TIMM_TRAIN = re.compile(
    _PREFIX + rf"Train: (\d+) \[\s*\d+/\d+.*?Loss:\s+{_FLOAT} \(\s*({_FLOAT})\).*?LR: ({_FLOAT})", re.M
)
_TIMM_TEST = re.compile(
    _PREFIX + rf"Test: \[\s*(\d+)/(\d+)\].*?Loss:\s+{_FLOAT} \(\s*({_FLOAT})\)"
    rf"\s+Acc@1:\s+{_FLOAT} \(\s*({_FLOAT})\)\s+Acc@5:\s+{_FLOAT} \(\s*({_FLOAT})\)",
    re.M,
)
_DVS_TRAIN = re.compile(rf"^Epoch: \[(\d+)\]\s+\[\s*\d+/\d+\].*?lr: ({_FLOAT}).*?loss: {_FLOAT} \(({_FLOAT})\)", re.M)
_DVS_TEST = re.compile(rf"^ \* Acc@1 = ({_FLOAT}), Acc@5 = ({_FLOAT}), loss = ({_FLOAT})", re.M)
_TIME = r"^(?:\[[\d:.]+\] )?"
_MAE_EPOCH = re.compile(_TIME + r"Epoch: \[(\d+)\]", re.M)
_MAE_TRAIN = re.compile(_TIME + rf"Averaged stats: lr: ({_FLOAT})\s+loss: {_FLOAT} \(({_FLOAT})\)", re.M)
_MAE_TEST = re.compile(_TIME + rf"\* Acc@1 ({_FLOAT}) Acc@5 ({_FLOAT}) loss ({_FLOAT})", re.M)
_ENERGY_LAYER = re.compile(r"^\('([^']+)', (\w+)\(.*\), array\(\[([^\]]+)\]\)\)\s*$", re.M)
#: The line after each heading holds a Python literal (a dict, a list of [q, k, v] rates).
_ENERGY_SSA = re.compile(r"^SSA info:\s*\n(.+)$", re.M)
_ENERGY_QKV = re.compile(r"^Firing rate of Q/K/V inputs in each block:\s*\n(.+)$", re.M)
_ENERGY_TOTALS = re.compile(
    rf"^Number of operations: ({_FLOAT}) G MACs, ({_FLOAT}) G ACs\s*\nEnergy consumption: ({_FLOAT}) mJ", re.M
)


@dataclass(frozen=True)
class Epoch:
    """One epoch of an upstream run: the test pass and the training averages that preceded it."""

    epoch: int
    top1: float
    top5: float
    eval_loss: float
    train_loss: float
    lr: float


@dataclass(frozen=True)
class Curve:
    """A whole upstream training run, in epoch order."""

    label: str
    epochs: tuple[Epoch, ...]

    @property
    def best(self) -> Epoch:
        """The epoch the paper reports: the highest test top-1 (first one on ties, as timm keeps it)."""
        return max(self.epochs, key=lambda e: (e.top1, -e.epoch))

    @property
    def final(self) -> Epoch:
        return self.epochs[-1]


@dataclass(frozen=True)
class EnergyLayer:
    """One counted layer of the upstream energy script. ``rate`` is the input firing rate in [0, 1]."""

    name: str
    kind: str
    dense_ops: float
    acs: float
    macs: float
    rate: float

    @property
    def energy_mJ(self) -> float:
        return (E_MAC_PJ * self.macs + E_AC_PJ * self.acs) * 1e-9


@dataclass(frozen=True)
class EnergyLog:
    """The per-layer table plus the totals the script printed (which add the SSA matmul ACs)."""

    layers: tuple[EnergyLayer, ...]
    macs_G: float
    acs_G: float
    energy_mJ: float
    #: The script's attention settings (``SSA info``: heads, tokens, ...) and each block's Q/K/V input rates, which
    #: the totals' SSA matmul ACs were counted from.
    ssa_info: dict[str, Any] = field(default_factory=dict)
    qkv_rates: tuple[tuple[float, float, float], ...] = ()

    @property
    def ssa_acs_G(self) -> float:
        """The Q.K.V matmul ACs, which the script adds to the total without a per-layer line."""
        return self.acs_G - sum(layer.acs for layer in self.layers) * 1e-9


def parse_timm_log(text: str, label: str) -> Curve:
    """Parse a timm ``train.py`` log (ImageNet). The last ``Train`` line of an epoch holds its averages."""
    train = [(m.start(), int(m[1]), float(m[2]), float(m[3])) for m in _TIMM_TRAIN.finditer(text)]
    test = [(m.start(), float(m[4]), float(m[5]), float(m[3])) for m in _TIMM_TEST.finditer(text) if m[1] == m[2]]
    return _merge(label, train, test)


def parse_dvs_log(text: str, label: str) -> Curve:
    """Parse the DVS ``train.py`` log. Its training averages are those of the last printed iteration."""
    train = [(m.start(), int(m[1]), float(m[3]), float(m[2])) for m in _DVS_TRAIN.finditer(text)]
    test = [(m.start(), float(m[1]), float(m[2]), float(m[3])) for m in _DVS_TEST.finditer(text)]
    return _merge(label, train, test)


def parse_mae_log(text: str, label: str) -> Curve:
    """Parse an MAE-style ``main_finetune.py`` log (QKFormer ImageNet): each ``Averaged stats`` line takes the
    epoch of the ``Epoch: [e]`` lines before it."""
    starts = [(m.start(), int(m[1])) for m in _MAE_EPOCH.finditer(text)]
    train = []
    for m in _MAE_TRAIN.finditer(text):
        k = bisect.bisect_left(starts, (m.start(), -1))
        if k:
            train.append((m.start(), starts[k - 1][1], float(m[2]), float(m[1])))
    test = [(m.start(), float(m[1]), float(m[2]), float(m[3])) for m in _MAE_TEST.finditer(text)]
    return _merge(label, train, test)


PARSERS = {"timm": parse_timm_log, "sew-dvs": parse_dvs_log, "mae": parse_mae_log}


def _merge(
    label: str, train: list[tuple[int, int, float, float]], test: list[tuple[int, float, float, float]]
) -> Curve:
    """Pair each test pass with the training line printed last before it, in log order.

    ``train``: (position, epoch, train loss, lr); ``test``: (position, top-1, top-5, eval loss). A test pass
    before any training line is ignored; an epoch tested twice keeps its last test.
    """
    events = sorted([(pos, True, values) for pos, *values in train] + [(pos, False, values) for pos, *values in test])
    epochs: dict[int, Epoch] = {}
    last_train = None
    for _, is_train, values in events:
        if is_train:
            last_train = values
        elif last_train is not None:
            epoch, train_loss, lr = last_train
            top1, top5, eval_loss = values
            epochs[epoch] = Epoch(epoch, top1, top5, eval_loss, train_loss, lr)
    if not epochs:
        raise ValueError(f"{label}: no completed epoch found in the log")
    return Curve(label, tuple(epochs[k] for k in sorted(epochs)))


def parse_energy_log(text: str) -> EnergyLog:
    """Parse the upstream energy script's per-layer tuples and totals."""
    layers = []
    for m in _ENERGY_LAYER.finditer(text):
        dense, acs, macs, rate_pct = (float(x) for x in m.group(3).split(","))
        layers.append(EnergyLayer(m.group(1), m.group(2), dense, acs, macs, rate_pct / 100.0))
    totals = _ENERGY_TOTALS.search(text)
    ssa, qkv = _ENERGY_SSA.search(text), _ENERGY_QKV.search(text)
    if not layers or totals is None or ssa is None or qkv is None:
        raise ValueError("not an upstream energy log: no per-layer tuples, SSA info, Q/K/V rates or totals")
    return EnergyLog(tuple(layers), float(totals.group(1)), float(totals.group(2)), float(totals.group(3)),
                     ast.literal_eval(ssa.group(1)), tuple(tuple(r) for r in ast.literal_eval(qkv.group(1))))


def load_energy_log(name: str) -> EnergyLog | None:
    """The authors' energy log extracted beside reference curve ``name`` (``<name>.energy.json``), if one was."""
    path = REFERENCE_DIR / f"{name}.energy.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    layers = tuple(EnergyLayer(**layer) for layer in data["layers"])
    return EnergyLog(layers, data["macs_G"], data["acs_G"], data["energy_mJ"], data["ssa_info"],
                     tuple(tuple(r) for r in data["qkv_rates"]))
