"""One live line per trial (row, seed, epoch/total, last top-1, its gap to the reference curve, ETA) in place of
Tune's tables.

On a terminal the lines are redrawn in place; otherwise each update is printed as a new line.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from ray import tune

from harness.reference import guard
from harness.run.trial import FAILED


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress(tune.Callback):
    """A Tune callback printing the state of every trial it has seen."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.texts: dict[str, str] = {}
        self.top1: dict[str, str] = {}
        self.reference: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.drawn = 0
        self.started: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state: keep only what survives a restore.
        return {"stream": None, "texts": {}, "top1": {}, "reference": {}, "labels": {}, "drawn": 0, "started": {}}

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stdout

    @staticmethod
    def _label(trial: Any) -> str:
        spec = trial.config.get("trial", {})
        return f"{spec.get('row', trial.trial_id)} seed{spec.get('seed', '?')}"

    @staticmethod
    def _total(trial: Any) -> int | None:
        schedule = trial.config.get("trial", {}).get("train", {}).get("schedule")
        return schedule["epochs"] + schedule["cooldown_epochs"] if schedule else None

    def _show(self, trial: Any, text: str) -> None:
        self.texts[trial.trial_id] = text
        self.labels[trial.trial_id] = self._label(trial)
        if self.out.isatty():
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            for trial_id, line in self.texts.items():
                self.out.write(f"\x1b[2K{self.labels[trial_id]:<22} {line}\n")
            self.drawn = len(self.texts)
        else:
            self.out.write(f"{self.labels[trial.trial_id]:<22} {text}\n")
        self.out.flush()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[trial.trial_id] = time.monotonic()
        self._show(trial, "starting (Ray Train workers, DDP)")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "epoch" not in result:
            return
        epoch, total = int(result["epoch"]) + 1, self._total(trial)
        top1 = result.get("top1", math.nan)
        if isinstance(top1, float) and math.isfinite(top1):
            self.top1[trial.trial_id] = f"top-1 {top1:.2f}"
        eta = ""
        if total:
            per_epoch = result.get("epoch_time_s", math.nan)
            if math.isfinite(per_epoch):
                eta = f"  ETA {_fmt_duration(per_epoch * (total - epoch))}"
        gap = result.get(guard.GAP_TO_REFERENCE, math.nan)
        if math.isfinite(gap):
            self.reference[trial.trial_id] = "  " + guard.status_text(gap, result.get(guard.BEHIND_SINCE, math.nan))
        self._show(trial, f"epoch {epoch}/{total or '?'}  {self.top1.get(trial.trial_id, 'top-1 n/a')}"
                          f"{self.reference.get(trial.trial_id, '')}{eta}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        took = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        failed = (trial.last_result or {}).get(FAILED)
        if failed:
            self._show(trial, f"FAILED after {_fmt_duration(took)}: {failed}")
            return
        last = trial.last_result or {}
        if last.get(guard.STOPPED_KEY):
            self._show(trial, f"{guard.STOPPED} after {_fmt_duration(took)}, last {self.top1.get(trial.trial_id)}"
                              f"{self.reference.get(trial.trial_id, '')}")
            return
        self._show(trial, f"done in {_fmt_duration(took)}, last {self.top1.get(trial.trial_id, 'top-1 n/a')}"
                          f"{self.reference.get(trial.trial_id, '')}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._show(trial, f"ERROR (traceback in {trial.path})")
