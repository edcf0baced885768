"""The authors' training curves as data files of this repository, and how a trial's epoch lines up with them.

Each curve lives in ``experiments/reference/<name>.json`` (written once by :mod:`harness.reference.extract` from
a published log, with its repository, commit, path and sha256) and is attached to the rows that reproduce it by
``reference_curve: <name>`` in the experiment file. A row may instead name a JSON file of the same shape (a path,
relative to its experiment file): a curve of one's own earlier run, or a synthetic target.

Alignment is by fraction of the schedule: epoch ``k`` of a ``K``-epoch trial (cooldown included) sits at
``(k + 1) / K`` and is compared with the reference at the same fraction of its ``N`` logged epochs, linearly
interpolated between the two nearest, so a recipe that trains for fewer or more epochs is compared at the same
point of its cosine. The band a trial may fall below the curve before it counts as behind is the curve's
dataset band (``band_pp``, derived in :mod:`harness.reference.extract`) plus one reference epoch's change at that
point (the cost of aligning to the wrong epoch where the curve is steep).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

#: Where the extracted curves and their sources manifest live.
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "experiments" / "reference"
SOURCES = "SOURCES.yaml"
COLUMNS = ("epoch", "top1", "eval_loss", "train_loss")


@dataclass(frozen=True)
class Source:
    """Where a curve's numbers were read: a file of a public repository at one commit, and its hash."""

    repository: str
    commit: str
    path: str
    sha256: str


@dataclass(frozen=True)
class ReferenceCurve:
    """Per-epoch test top-1 (and losses where logged) of one run the authors published, with its provenance."""

    name: str
    label: str
    dataset: str
    #: Epochs as logged, from 0; ``top1`` in percent; losses None where the log has none.
    epochs: tuple[int, ...]
    top1: tuple[float, ...]
    eval_loss: tuple[float | None, ...]
    train_loss: tuple[float | None, ...]
    #: The first epoch at the run's peak learning rate (the end of its warmup), read off the logged rates.
    warmup_epochs: int
    #: The dataset's tolerance band in percentage points, and how it was derived.
    band_pp: float
    band_derivation: str
    source: Source | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        n = len(self.epochs)
        if n < 2 or not (len(self.top1) == len(self.eval_loss) == len(self.train_loss) == n):
            raise ValueError(f"reference curve {self.name}: needs at least 2 epochs and one value per column")
        if list(self.epochs) != sorted(self.epochs):
            raise ValueError(f"reference curve {self.name}: epochs out of order")

    @property
    def total_epochs(self) -> int:
        return self.epochs[-1] + 1

    @property
    def best(self) -> tuple[int, float]:
        """(epoch, top-1) of the best test epoch, the first on ties."""
        k = max(range(len(self.top1)), key=lambda i: (self.top1[i], -i))
        return self.epochs[k], self.top1[k]

    def _position(self, fraction: float) -> float:
        """The (fractional) reference epoch at ``fraction`` of its schedule."""
        return min(max(fraction * self.total_epochs - 1.0, float(self.epochs[0])), float(self.epochs[-1]))

    def top1_at(self, fraction: float) -> float:
        """Reference top-1 at ``fraction`` (0-1] of its schedule, linearly interpolated between logged epochs."""
        x = self._position(fraction)
        k = max(i for i, e in enumerate(self.epochs) if e <= x)
        if k == len(self.epochs) - 1:
            return self.top1[k]
        e0, e1 = self.epochs[k], self.epochs[k + 1]
        return self.top1[k] + (self.top1[k + 1] - self.top1[k]) * (x - e0) / (e1 - e0)

    def band_at(self, fraction: float) -> float:
        """Points below the curve a trial may be at ``fraction`` and still be on track."""
        x = self._position(fraction)  # fraction of position x is (x + 1) / N: half an epoch either side
        step = abs(self.top1_at((x + 1.5) / self.total_epochs) - self.top1_at((x + 0.5) / self.total_epochs))
        return self.band_pp + step

    @property
    def warmup_fraction(self) -> float:
        return self.warmup_epochs / self.total_epochs

    def to_json(self) -> str:
        """The data file: the fields, then one line per epoch (``columns``, ``rows``)."""
        head = {k: v for k, v in asdict(self).items() if k not in COLUMNS[1:] and k != "epochs"}
        head["columns"] = list(COLUMNS)
        rows = zip(self.epochs, self.top1, self.eval_loss, self.train_loss, strict=True)
        lines = ",\n".join("  " + json.dumps(list(r)) for r in rows)
        return json.dumps(head, indent=1)[:-2] + ',\n "rows": [\n' + lines + "\n ]\n}\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> ReferenceCurve:
        try:
            data = json.loads(text)
            rows = data.pop("rows")
            columns = data.pop("columns")
            if columns != list(COLUMNS):
                raise ValueError(f"columns {columns}, expected epoch, top1, eval_loss, train_loss")
            source = data.pop("source", None)
            epochs, top1, eval_loss, train_loss = (tuple(column) for column in zip(*rows, strict=True))
            return cls(epochs=tuple(int(e) for e in epochs), top1=tuple(float(t) for t in top1),
                       eval_loss=eval_loss, train_loss=train_loss,
                       source=Source(**source) if source else None, **data)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{where}: not a reference curve file ({type(err).__name__}: {err})") from None


def curve_path(reference: str, base: Path | None = None) -> Path:
    """The file a row's ``reference_curve`` names: a curve of this repository by name, else a JSON path
    (relative to ``base``, the experiment file's folder)."""
    if reference.endswith(".json") or "/" in reference:
        path = Path(reference)
        return path if path.is_absolute() or base is None else base / path
    return REFERENCE_DIR / f"{reference}.json"


def available() -> list[str]:
    """The names of the curves this repository holds."""
    return sorted(p.stem for p in REFERENCE_DIR.glob("*.json") if not p.stem.endswith(".energy"))


def load_curve(reference: str, base: Path | None = None) -> ReferenceCurve:
    """Read a reference curve (see :func:`curve_path`); a missing one names the curves that exist."""
    path = curve_path(reference, base)
    if not path.is_file():
        raise FileNotFoundError(f"reference curve {reference!r}: no file {path}; curves here: {', '.join(available())}")
    return ReferenceCurve.from_json(path.read_text(), str(path))


def gap(curve: ReferenceCurve, epoch: int, total_epochs: int, top1: float) -> tuple[float, float, float]:
    """(reference top-1, gap in points, band) for a trial's ``epoch`` of ``total_epochs`` at ``top1``."""
    fraction = (epoch + 1) / total_epochs
    reference = curve.top1_at(fraction)
    return reference, top1 - reference if math.isfinite(top1) else math.nan, curve.band_at(fraction)
