"""The energy a trial's devices drew, read from their hardware counters: NVML on NVIDIA GPUs, RAPL on CPUs.

A GPU's counter is NVML's total energy since the driver loaded (``nvidia-ml-py``, Volta and later), read
for the GPU this process trains on. A CPU's is RAPL's package counters in ``/sys/class/powercap`` (every
process on the node draws from them, so only one rank per node reads them). Where no counter is there (no
NVIDIA driver, no powercap, no permission), a meter gives no number and says why: the harness records
"n/a" with that reason, never an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.formatting import NA
from spikingformer.training.distributed import all_reduce
from spikingformer.training.engine import Callback

POWERCAP = Path("/sys/class/powercap")
#: Per-epoch metric of a trial run: joules drawn by all its devices during that epoch.
ENERGY_J = "energy_J"


@dataclass(frozen=True)
class Counter:
    """One monotonic energy counter: ``read() -> joules``, wrapping at ``wrap`` joules (None: never)."""

    source: str
    paths: tuple[Path, ...] = ()
    wrap: tuple[float, ...] = ()
    nvml_handle: object | None = None

    def read(self) -> list[float]:
        if self.nvml_handle is not None:
            import pynvml

            return [pynvml.nvmlDeviceGetTotalEnergyConsumption(self.nvml_handle) / 1e3]
        return [int(p.read_text()) / 1e6 for p in self.paths]


def nvml_counter(device: torch.device) -> tuple[Counter | None, str]:
    """The NVML energy counter of ``device`` (found by UUID, so CUDA_VISIBLE_DEVICES does not matter)."""
    try:
        import pynvml
    except ImportError as err:
        return None, f"nvidia-ml-py is not installed ({err})"
    try:
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        name = pynvml.nvmlDeviceGetName(handle)
    except pynvml.NVMLError as err:
        return None, f"NVML: {err}"
    return Counter(source=f"NVML total energy counter of {name} ({uuid})", nvml_handle=handle), ""


def rapl_counter(root: Path = POWERCAP) -> tuple[Counter | None, str]:
    """The RAPL package counters of this node (``intel-rapl:<n>`` zones, each a whole CPU package)."""
    if not root.is_dir():
        return None, f"the kernel exposes no RAPL counters here ({root} absent)"
    zones = sorted(z for z in root.glob("intel-rapl:*") if z.name.count(":") == 1)
    if not zones:
        return None, f"no RAPL package zone under {root}"
    try:
        paths = tuple(z / "energy_uj" for z in zones)
        wrap = tuple(int((z / "max_energy_range_uj").read_text()) / 1e6 for z in zones)
        for path in paths:
            path.read_text()
    except OSError as err:
        return None, f"RAPL counters not readable ({err})"
    names = ", ".join((z / "name").read_text().strip() for z in zones)
    return Counter(source=f"RAPL {names} (whole node: every process on it)", paths=paths, wrap=wrap), ""


class EnergyMeter:
    """Joules drawn by one device between laps; ``counter`` None means not measurable here (``reason``)."""

    def __init__(self, counter: Counter | None, reason: str = "") -> None:
        self.counter = counter
        self.reason = reason
        self.last = counter.read() if counter is not None else []

    @property
    def source(self) -> str:
        return self.counter.source if self.counter is not None else f"{NA}: {self.reason}"

    def lap(self) -> float | None:
        """Joules since the meter started or the last lap (a counter that wrapped once is unwrapped)."""
        if self.counter is None:
            return None
        now = self.counter.read()
        wraps = self.counter.wrap or (math.inf,) * len(now)
        joules = sum((b - a) if b >= a else (b + w - a) for a, b, w in zip(self.last, now, wraps, strict=True))
        self.last = now
        return joules


def meter_for(device: torch.device, *, reads_node: bool = True) -> EnergyMeter:
    """A meter of ``device``: NVML for a CUDA device; RAPL for the CPU, read only where ``reads_node`` (one
    rank per node), the other ranks adding 0 J."""
    if device.type == "cuda":
        return EnergyMeter(*nvml_counter(device))
    counter, reason = rapl_counter()
    if counter is not None and not reads_node:
        return EnergyMeter(Counter(source=counter.source))
    return EnergyMeter(counter, reason)


def lap_all_ranks(meter: EnergyMeter, device: torch.device) -> float | None:
    """Collective: the joules of every rank's device since their last lap, summed; None if any rank has none."""
    joules = meter.lap()
    (total,) = all_reduce([math.nan if joules is None else joules], device)
    return total if math.isfinite(total) else None


class EpochEnergy(Callback):
    """Every rank laps its meter at each epoch's end; rank 0 logs the sum over ranks as ``energy_J``
    (step = epoch; an epoch trained again after a restart adds its second cost)."""

    def __init__(self, meter: EnergyMeter, device: torch.device, log: Callable[[dict[str, float], int], None] | None):
        self.meter = meter
        self.device = device
        self.log = log

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        joules = lap_all_ranks(self.meter, self.device)  # collective: every rank, every epoch
        if self.log is not None and joules is not None:
            self.log({ENERGY_J: joules}, int(metrics["epoch"]))
