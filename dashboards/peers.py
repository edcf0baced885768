"""Published peer results (``peers.yaml``), so the report places our runs among the models they compete with.

Every plotted value keeps its evidence mark; a point with an ``M`` (unverified) value on either axis
of a plot is drawn as unverified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

EVIDENCE = {"R": "read in the upstream repository or log", "B": "third-party table", "M": "unverified (recalled)"}
VALUES = ("top1", "params_M", "energy_mJ")
_REQUIRED = ("model", "variant", "dataset", "time_steps", "top1", "source")
_FIELDS = {*_REQUIRED, *VALUES, "evidence", "note"}
PEERS_FILE = Path(__file__).with_name("peers.yaml")


@dataclass(frozen=True)
class Peer:
    """One published (model, variant, dataset, T) result."""

    model: str
    variant: str
    dataset: str
    time_steps: int
    top1: float
    params_M: float | None
    energy_mJ: float | None
    evidence: dict[str, str]
    source: str
    note: str = ""

    def unverified(self, *values: str) -> bool:
        """True when any of the named values is only recalled from a paper (mark M)."""
        return any(self.evidence.get(v) == "M" for v in values)


def load_peers(path: Path = PEERS_FILE) -> list[Peer]:
    """Read and validate the peer table; a wrong key or mark names the entry."""
    entries = yaml.safe_load(path.read_text()) or []
    return [_peer(i, entry) for i, entry in enumerate(entries)]


def peers_for(peers: list[Peer], dataset: str) -> list[Peer]:
    """The peers on one dataset (named as in ``spikingformer.config.DATASETS``)."""
    return [p for p in peers if p.dataset == dataset]


def _peer(index: int, entry: object) -> Peer:
    if not isinstance(entry, dict):
        raise ValueError(f"peers.yaml entry {index}: expected a mapping of {sorted(_FIELDS)}, got {entry!r}")
    where = f"peers.yaml entry {index} ({entry.get('model')} {entry.get('variant')})"
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    missing = [key for key in _REQUIRED if entry.get(key) is None]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    evidence = dict(entry.get("evidence") or {})
    for value in VALUES:
        present = entry.get(value) is not None
        if present != (value in evidence):
            raise ValueError(f"{where}: {value} needs exactly one evidence mark, got value={entry.get(value)}")
    bad = {k: v for k, v in evidence.items() if v not in EVIDENCE}
    if bad:
        raise ValueError(f"{where}: evidence marks {bad} not in {sorted(EVIDENCE)}")
    try:
        return Peer(
            model=str(entry["model"]),
            variant=str(entry["variant"]),
            dataset=str(entry["dataset"]),
            time_steps=int(entry["time_steps"]),
            top1=float(entry["top1"]),
            params_M=None if entry.get("params_M") is None else float(entry["params_M"]),
            energy_mJ=None if entry.get("energy_mJ") is None else float(entry["energy_mJ"]),
            evidence=evidence,
            source=str(entry["source"]),
            note=str(entry.get("note", "")),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err
