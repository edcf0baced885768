"""The convergence guard: while a trial trains, each evaluated epoch against the authors' curve of its row.

Every evaluated epoch gets ``gap_to_reference`` (test top-1 minus the reference at the same fraction of the
schedule, :func:`harness.reference.curves.gap`) and ``reference_top1``. An epoch more than the band below the
curve is *behind*; epochs inside the reference's warmup (or the trial's own) are not judged, since fraction
alignment means little while learning rates still differ. The trial's status reads "on track" or "behind by x
points since epoch e" (epochs counted from 1, as the progress line counts them). With ``stop_when_behind``, a
trial behind for ``patience`` evaluated epochs in a row stops after that epoch, and its run records the verdict
:data:`STOPPED`.

The trial's epoch callback (``harness.run.trial``) consults it on every rank: every rank sees the same reduced
metrics and so takes the same decision, and the engine stops when a callback's ``stop_reason`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.reference.curves import ReferenceCurve, gap

#: Per-epoch metrics the guard adds.
GAP_TO_REFERENCE = "gap_to_reference"
REFERENCE_TOP1 = "reference_top1"
REFERENCE_BAND = "reference_band_pp"
#: The first epoch (from 1) of the current run of epochs behind the band; NaN when on track.
BEHIND_SINCE = "behind_since_epoch"
#: 1.0 on the epoch after which the guard stopped the trial.
STOPPED_KEY = "stopped_behind_reference"
#: The MLflow tag holding the trial's status, and the verdict of a trial the guard stopped.
TAG = "sfh.reference"
STOPPED = "stopped: behind the reference"


def status_text(gap_pp: float, behind_since: float) -> str:
    """"on track" or "behind by x points since epoch e" (``behind_since`` NaN when on track)."""
    if not math.isfinite(behind_since):
        return "on track" if math.isfinite(gap_pp) else "not judged yet"
    return f"behind by {-gap_pp:.1f} points since epoch {int(behind_since)}"


@dataclass(frozen=True)
class GuardSpec:
    """What a trial's guard needs, as plain data travelling in the trial's spec."""

    curve: ReferenceCurve
    stop_when_behind: bool
    patience: int

    def to_mapping(self) -> dict[str, Any]:
        return {"curve": self.curve.to_json(), "stop_when_behind": self.stop_when_behind, "patience": self.patience}

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> GuardSpec:
        curve = ReferenceCurve.from_json(data["curve"], "the trial's reference curve")
        return cls(curve, bool(data["stop_when_behind"]), int(data["patience"]))


class ConvergenceGuard:
    """Judges each evaluated epoch (:meth:`judge`); :attr:`stopped` says why the trial should stop, if it should."""

    def __init__(self, spec: GuardSpec, total_epochs: int, warmup_epochs: int) -> None:
        self.spec = spec
        self.total_epochs = total_epochs
        self.warmup_fraction = max(spec.curve.warmup_fraction, warmup_epochs / total_epochs)
        self.behind: list[int] = []  # the current run of behind epochs (from 0)
        self.stopped: str | None = None

    def replay(self, history: list[dict[str, float]]) -> None:
        """A resumed run replays the epochs it had trained, so a streak survives a restart."""
        for metrics in history:
            self.judge(metrics)

    def judge(self, metrics: dict[str, float]) -> dict[str, float]:
        """The guard's metrics for one epoch (empty for an epoch without evaluation); updates the streak."""
        top1 = metrics.get("top1", math.nan)
        if not math.isfinite(top1):
            return {}
        epoch = int(metrics["epoch"])
        reference, gap_pp, band = gap(self.spec.curve, epoch, self.total_epochs, top1)
        judged = (epoch + 1) / self.total_epochs > self.warmup_fraction
        if judged and gap_pp < -band:
            self.behind.append(epoch)
        elif judged:
            self.behind = []
        if self.spec.stop_when_behind and len(self.behind) >= self.spec.patience:
            self.stopped = f"{STOPPED} ({status_text(gap_pp, self.behind[0] + 1)})"
        since = self.behind[0] + 1 if self.behind else math.nan
        out = {GAP_TO_REFERENCE: gap_pp, REFERENCE_TOP1: reference, REFERENCE_BAND: band, BEHIND_SINCE: since}
        return {**out, STOPPED_KEY: 1.0} if self.stopped else out

    def status(self, metrics: dict[str, float]) -> str:
        """The tag's text after ``metrics`` (the guard's own) were judged."""
        if self.stopped:
            return self.stopped
        return status_text(metrics.get(GAP_TO_REFERENCE, math.nan), metrics.get(BEHIND_SINCE, math.nan))
