"""Paper vs reproduced: one row per paper configuration, read back from MLflow, with a verdict.

``collect`` is the API the dashboards build on; ``render_markdown`` / ``render_csv`` print it. A row's
figures aggregate its FINISHED seeds (mean and sample sd); the verdict compares the mean best top-1 (the
paper's protocol: best test epoch) with the paper within the experiment's tolerance.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness import tracking
from harness.config import Experiment, PaperNumbers, Tolerance

NA = "n/a"


@dataclass
class SeedRun:
    """One (row, seed) MLflow run: its status and latest metric values."""

    run_id: str
    seed: int
    status: str
    metrics: dict[str, float]


@dataclass
class RowResult:
    """A paper row against its reproduction (figures over FINISHED seeds; None where there are none)."""

    experiment: str
    row_id: str
    paper: PaperNumbers
    tolerance: Tolerance
    runs: list[SeedRun] = field(default_factory=list)
    best_top1_mean: float | None = None
    best_top1_sd: float | None = None
    last_top1_mean: float | None = None
    last_top1_sd: float | None = None
    #: Our parameter count (absolute), SOPs (G ACs per image) and energy (mJ per image).
    params: float | None = None
    sops_G: float | None = None
    energy_mJ: float | None = None
    #: Mean best top-1 minus the paper's, in percentage points.
    delta: float | None = None
    verdict: str = "NOT RUN"

    @property
    def finished(self) -> list[SeedRun]:
        return [r for r in self.runs if r.status == "FINISHED"]


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _values(runs: list[SeedRun], key: str) -> list[float]:
    return [r.metrics[key] for r in runs if key in r.metrics]


def summarize(
    experiment: str, row_id: str, paper: PaperNumbers, tolerance: Tolerance, runs: list[SeedRun]
) -> RowResult:
    """Aggregate one row's seed runs and judge it."""
    result = RowResult(experiment, row_id, paper, tolerance, sorted(runs, key=lambda r: r.seed))
    done = result.finished
    result.best_top1_mean, result.best_top1_sd = _mean_sd(_values(done, "best_top1"))
    result.last_top1_mean, result.last_top1_sd = _mean_sd(_values(done, "last_top1"))
    result.params, result.sops_G, result.energy_mJ = (
        _mean_sd(_values(done, key))[0] for key in ("params", "sops_G", "energy_mJ")
    )
    if result.best_top1_mean is not None and paper.top1 is not None:
        result.delta = result.best_top1_mean - paper.top1
    if not runs:
        result.verdict = "NOT RUN"
    elif any(r.status in ("RUNNING", "SCHEDULED") for r in runs):
        result.verdict = "RUNNING"
    elif not done:
        result.verdict = "ERROR"
    elif result.delta is None:
        result.verdict = NA
    else:
        result.verdict = tolerance.verdict(result.delta)
    return result


def collect(experiment: Experiment, tracking_uri: str, *, name: str | None = None) -> list[RowResult]:
    """Every row of ``experiment`` with its MLflow runs (``name``: the tracked name, if not the file's)."""
    name = name or experiment.name
    by_key: dict[str, list[SeedRun]] = {}
    for run in tracking.Tracking(tracking_uri).trial_runs(name):
        tags = run.data.tags
        if tracking.ROW not in tags or tracking.SEED not in tags:
            continue
        seed = int(tags[tracking.SEED])
        if tags.get(tracking.RUN_KEY) != tracking.run_key(name, tags[tracking.ROW], seed):
            continue  # a search trial of this row, not the row itself
        by_key.setdefault(tags[tracking.ROW], []).append(
            SeedRun(run.info.run_id, seed, run.info.status, dict(run.data.metrics))
        )
    return [summarize(name, row.id, row.paper, experiment.tolerance, by_key.get(row.id, [])) for row in experiment.rows]


def _num(value: float | None) -> str:
    """Two decimals, or three significant digits below 1 (a demo's SOPs are thousandths of a G)."""
    if value is None:
        return NA
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _pair(ours: float | None, paper: float | None) -> str:
    return f"{_num(ours)} / {_num(paper)}"


def _spread(mean: float | None, sd: float | None) -> str:
    return _num(mean) + (f" ± {sd:.2f}" if sd is not None else "")


def render_markdown(rows: Sequence[RowResult]) -> str:
    """The paper-vs-reproduced table (best = best test epoch, as the paper reports; last = final epoch)."""
    lines = [
        "| row | paper top-1 | best top-1 | last top-1 | Δ best (pp) | params M (ours / paper) "
        "| SOPs G (ours / paper) | energy mJ (ours / paper) | seeds | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        params = r.params / 1e6 if r.params is not None else None
        delta = NA if r.delta is None else f"{r.delta:+.2f}"
        lines.append(
            f"| {r.row_id} | {_num(r.paper.top1)} | {_spread(r.best_top1_mean, r.best_top1_sd)} "
            f"| {_spread(r.last_top1_mean, r.last_top1_sd)} | {delta} | {_pair(params, r.paper.params_M)} "
            f"| {_pair(r.sops_G, r.paper.sops_G)} | {_pair(r.energy_mJ, r.paper.energy_mJ)} "
            f"| {len(r.finished)}/{len(r.runs)} | {r.verdict} |"
        )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "experiment", "row", "paper_top1", "best_top1_mean", "best_top1_sd", "last_top1_mean", "last_top1_sd", "delta",
    "params", "paper_params_M", "sops_G", "paper_sops_G", "energy_mJ", "paper_energy_mJ", "seeds_finished",
    "seeds", "verdict", "paper_source",
)


def render_csv(rows: Sequence[RowResult]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([
            r.experiment, r.row_id, r.paper.top1, r.best_top1_mean, r.best_top1_sd, r.last_top1_mean, r.last_top1_sd,
            r.delta, r.params, r.paper.params_M, r.sops_G, r.paper.sops_G, r.energy_mJ, r.paper.energy_mJ,
            len(r.finished), len(r.runs), r.verdict, r.paper.source,
        ])
    return out.getvalue()
