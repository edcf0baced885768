"""Paper vs reproduced: one row per paper configuration, read back from MLflow, with a verdict.

``collect`` is the API the tables build on; ``render_markdown`` / ``render_csv`` print it, with the
``format_*`` helpers that any other rendering (the dashboards' HTML) reuses so every view agrees. A row's
figures aggregate its FINISHED seeds (mean and sample sd); the verdict compares the mean best top-1 (the
paper's protocol: best test epoch) with the paper within the experiment's tolerance.

This module is also the one facade ``dashboards`` reads through (the harness never imports it): experiment files
and what each row trains (``load_experiment``, ``discover``, ``row_setups``), and the tracking store
(``RunReader``: rows, tracked variants, per-epoch histories, artifacts).
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from harness import tracking
from harness.cost.actuals import DEVICE_HOURS, ENERGY_KWH, ENERGY_SOURCE, TRAIN_TIME_S
from harness.cost.plans import latest_plan
from harness.cost.projection import Plan
from harness.experiment import Experiment, PaperNumbers, Tolerance, discover, load_experiment
from harness.experiment.grid import NO_REFERENCE, axes
from harness.formatting import (
    NA,
    format_delta,
    format_duration,
    format_kwh,
    format_money,
    format_number,
    format_pair,
    format_spread,
    format_value,
)
from harness.reference import guard
from harness.reference.curves import ReferenceCurve
from harness.reference.logs import E_AC_PJ, EnergyLog, load_energy_log
from harness.tracking import default_tracking_uri
from spikingformer import evaluate
from spikingformer.models import MODEL_CONFIGS, batch_coupling, model_label

__all__ = [
    "ENERGY_ARTIFACT", "NA", "Experiment", "FamilyLine", "RowCost", "RowResult", "RowSetup", "RunReader", "SeedRun",
    "collect", "family_lines", "render_families_csv", "render_families_markdown", "NOT_COMPARABLE", "batch_departures",
    "default_tracking_uri", "discover", "format_delta", "format_number", "format_pair", "format_spread",
    "format_table", "latest_plan", "load_experiment", "render_costs", "render_csv", "render_markdown", "row_costs",
    "row_setups", "summarize",
    "NO_REFERENCE", "axes", "format_value", "grid_cells",
    "MEMORY_ARTIFACT", "E_AC_PJ", "EnergyLog", "GAP_TO_REFERENCE", "ReferenceCurve", "STOPPED", "reference_curves",
    "reference_energy",
]  # fmt: skip

#: The verdict of a row whose seeds were stopped before they finished, none of them by a failure.
INTERRUPTED = "INTERRUPTED"
#: The verdict of a row whose convergence guard stopped a seed below the authors' curve.
STOPPED = guard.STOPPED
#: The per-epoch gap of a trial to its row's reference curve (the report's gap figure).
GAP_TO_REFERENCE = guard.GAP_TO_REFERENCE
#: The verdict of a row whose model couples a sample to its batch, run at other per-rank batches than upstream's.
NOT_COMPARABLE = "NOT COMPARABLE"
#: The per-layer firing-rate and energy report a finished trial logs (``EnergyReport.to_json``).
ENERGY_ARTIFACT = evaluate.ENERGY_ARTIFACT
#: The memory-inclusive estimate against the bit-matched quantized ANN (``MemoryInclusiveReport.to_dict``).
MEMORY_ARTIFACT = evaluate.MEMORY_ARTIFACT


@dataclass
class SeedRun:
    """One (row, seed) MLflow run: its status and latest metric values."""

    run_id: str
    seed: int
    status: str
    metrics: dict[str, float]
    #: Why a FAILED or KILLED run ended (its ``sfh.failure`` tag), None otherwise.
    failure: str | None = None
    #: Its per-rank training and evaluation batches (None where the run did not record them).
    train_batch: int | None = None
    eval_batch: int | None = None
    #: Its convergence guard's last word (``sfh.reference`` tag): "on track", "behind by ...", "stopped: ...".
    convergence: str | None = None


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
    #: A grid point's axis values and the paper row it equals (``harness.experiment.grid``); empty / None otherwise.
    point: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    #: The authors' curve the row is compared with while it trains (``reference_curve``), None without a log.
    curve: str | None = None

    @property
    def convergence(self) -> str:
        """Each run's guard status, "no published log" for a row without a reference curve."""
        if self.curve is None:
            return "no published log"
        return "; ".join(f"seed {r.seed}: {r.convergence}" for r in self.runs if r.convergence) or NA

    @property
    def finished(self) -> list[SeedRun]:
        return [r for r in self.runs if r.status == "FINISHED"]

    @property
    def params_M(self) -> float | None:
        """Our parameter count in millions, the paper's unit."""
        return self.params / 1e6 if self.params is not None else None


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
    result.best_top1_mean, result.best_top1_sd = _mean_sd(_values(done, evaluate.BEST_TOP1))
    result.last_top1_mean, result.last_top1_sd = _mean_sd(_values(done, evaluate.LAST_TOP1))
    result.params, result.sops_G, result.energy_mJ = (
        _mean_sd(_values(done, key))[0] for key in (evaluate.PARAMS, evaluate.SOPS_G, evaluate.ENERGY_MJ)
    )
    if result.best_top1_mean is not None and paper.top1 is not None:
        result.delta = result.best_top1_mean - paper.top1
    if not runs:
        result.verdict = "NOT RUN"
    elif any(r.status in ("RUNNING", "SCHEDULED") for r in runs):
        result.verdict = "RUNNING"
    elif not done:  # stopped by Ctrl-C or a lost driver (KILLED): `sfh resume` goes on; a failure is an error
        result.verdict = "ERROR" if any(r.status == "FAILED" for r in runs) else INTERRUPTED
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
            SeedRun(run.info.run_id, seed, run.info.status, dict(run.data.metrics), tags.get(tracking.FAILURE),
                    _integer(run.data.params.get("data.batch_size")), _integer(tags.get(tracking.EVAL_BATCH)),
                    tags.get(guard.TAG))
        )
    out = []
    for row in experiment.rows:
        result = summarize(name, row.id, row.paper, experiment.tolerance, by_key.get(row.id, []))
        result.point, result.reference, result.curve = row.point, row.reference, row.reference_curve
        if any((r.convergence or "").startswith(guard.STOPPED) for r in result.finished):
            result.verdict = STOPPED  # the guard cut it short: its top-1 is not a reproduction's
        if row.point and row.reference is None and result.verdict == NA:
            result.verdict = NO_REFERENCE  # a grid point no paper row equals
        model = experiment.train_config(row).model
        if result.verdict != "RUNNING" and batch_coupling(model.name, **model.kwargs) and batch_departures(result):
            result.verdict = NOT_COMPARABLE
        out.append(result)
    return out


def _integer(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def batch_departures(result: RowResult) -> list[str]:
    """The finished seeds of ``result`` whose per-rank batches (train / eval) differ from upstream's, which the
    row's paper numbers declare; a model coupling a sample to its batch is comparable only at upstream's."""
    upstream = (result.paper.train_batch_per_rank, result.paper.eval_batch_per_rank)
    return [f"seed {r.seed}: per-rank batch {r.train_batch} / {r.eval_batch}, upstream {upstream[0]} / {upstream[1]}"
            for r in result.finished if (r.train_batch, r.eval_batch) != upstream]


# --- across families -------------------------------------------------------------------------------------


@dataclass
class FamilyLine:
    """One row of one experiment on the cross-family table (``sfh compare``, the report's index): its result
    beside its SOPs and energy under the common ruler."""

    table: str
    row: str
    model: str
    dataset: str
    time_steps: int
    result: RowResult
    sops_common: float | None
    energy_common: float | None
    #: The memory-inclusive estimate (``spikingformer.energy.memory``): the spiking model, its bit-matched
    #: quantized ANN, the firing rate measured (spikes / neuron outputs) and the rate at which the two cost the same.
    energy_memory: float | None = None
    energy_qann: float | None = None
    firing_rate: float | None = None
    break_even_rate: float | None = None

    def values(self) -> list[object]:
        r = self.result
        return [
            self.table, self.row, self.model, self.dataset, self.time_steps, r.params_M, r.sops_G, self.sops_common,
            r.energy_mJ, self.energy_common, r.paper.energy_mJ, self.energy_memory, self.energy_qann,
            self.firing_rate, self.break_even_rate, r.paper.top1, r.best_top1_mean,
            f"{len(r.finished)}/{len(r.runs)}", r.verdict,
        ]


def _mean(result: RowResult, metric: str) -> float | None:
    values = [run.metrics[metric] for run in result.finished if metric in run.metrics]
    return statistics.fmean(values) if values else None


def family_lines(experiment: Experiment, tracking_uri: str, *, name: str | None = None) -> list[FamilyLine]:
    """Every row of ``experiment`` with its figures under both conventions (None where nothing finished)."""
    out = []
    for row, result in zip(experiment.rows, collect(experiment, tracking_uri, name=name), strict=True):
        config = experiment.config(row)
        out.append(FamilyLine(
            name or experiment.name, row.id, config.model.name, config.data.dataset,
            config.model.kwargs.get("T") or 0, result,
            _mean(result, evaluate.figure(evaluate.SOPS_G, evaluate.COMMON)),
            _mean(result, evaluate.figure(evaluate.ENERGY_MJ, evaluate.COMMON)),
            _mean(result, evaluate.ENERGY_MJ_MEMORY), _mean(result, evaluate.ENERGY_MJ_QANN),
            _mean(result, evaluate.FIRING_RATE_SPIKES), _mean(result, evaluate.BREAK_EVEN_RATE),
        ))
    return out


FAMILY_COLUMNS = (
    "table", "row", "model", "dataset", "T", "params_M", "sops_G_paper_conv", "sops_G_common",
    "energy_mJ_paper_conv", "energy_mJ_common", "paper_energy_mJ", "energy_mJ_memory", "energy_mJ_qann",
    "firing_rate", "break_even_rate", "paper_top1", "top1", "seeds", "verdict",
)


def _family_cell(value: object) -> str:
    if value is None:
        return NA
    return format_number(value) if isinstance(value, float) else str(value)


def render_families_markdown(table: list[FamilyLine]) -> str:
    """The cross-family table (``sfh compare``, the report's index) in markdown."""
    header = (
        "| table | row | model | dataset | T | params M | SOPs G (paper conv. / common) "
        "| energy mJ (paper conv. / common / paper's figure) | energy mJ memory-incl. (SNN / bit-matched ANN) "
        "| firing rate (measured / break-even) | top-1 (paper / ours) | seeds | verdict |"
    )
    lines_out = [header, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for line in table:
        (t, row, model, dataset, steps, params, sops, sops_c, energy, energy_c, paper_e, memory, qann, rate, even,
         paper_top1, top1, seeds, v) = (_family_cell(x) for x in line.values())
        lines_out.append(
            f"| {t} | {row} | {model} | {dataset} | {steps} | {params} | {sops} / {sops_c} "
            f"| {energy} / {energy_c} / {paper_e} | {memory} / {qann} | {rate} / {even} | {paper_top1} / {top1} "
            f"| {seeds} | {v} |"
        )
    return "\n".join(lines_out) + "\n"


def render_families_csv(table: list[FamilyLine]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FAMILY_COLUMNS)
    writer.writerows(line.values() for line in table)
    return buffer.getvalue()


# --- what each row trains ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowSetup:
    """What a row trains, as far as comparisons care: the model, the dataset and the time steps T."""

    model: str
    dataset: str
    time_steps: int
    #: What the model is (``spikingformer.models.model_label``): the registered name, or its real depth-width.
    label: str = ""
    #: Its schedule's epochs, cooldown included.
    total_epochs: int = 0


def row_setups(experiment: Experiment) -> dict[str, RowSetup]:
    """Each row's setup by row id, from its validated TrainConfig (T: the registered default unless overridden)."""
    setups = {}
    for row in experiment.rows:
        config = experiment.config(row)
        kwargs = {**MODEL_CONFIGS[config.model.name][1], **config.model.kwargs}  # every registered config sets T
        label = model_label(config.model.name, **config.model.kwargs)
        setups[row.id] = RowSetup(config.model.name, config.data.dataset, int(kwargs["T"]), label,
                                  config.schedule.total_epochs)
    return setups


def reference_curves(experiment: Experiment) -> dict[str, ReferenceCurve | None]:
    """Each row's reference curve by row id (None where the authors published no log of it)."""
    return {row.id: experiment.reference_for(row) for row in experiment.rows}


def reference_energy(curve: ReferenceCurve | None) -> EnergyLog | None:
    """The authors' per-layer energy log extracted beside ``curve``, where they published one."""
    return load_energy_log(curve.name) if curve is not None else None


# --- reading a tracking store -----------------------------------------------------------------------------


class RunReader:
    """A tracking store read back for reports: rows, tracked variants, per-epoch histories and artifacts.

    A run that is still going, or that died early, has fewer epochs and may lack its artifacts; every
    reader here answers "nothing yet" (an empty list, ``None``) instead of failing.
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = tracking_uri or default_tracking_uri()
        self._store = tracking.Tracking(self.uri)

    def rows(self, experiment: Experiment, *, name: str | None = None) -> list[RowResult]:
        """``collect`` on this store."""
        return collect(experiment, self.uri, name=name)

    def variants(self, experiment: Experiment) -> list[str]:
        """The names under which ``experiment`` has runs: ``<name>``, ``<name>-smoke``, ``<name>[-smoke]-e<N>``."""
        pattern = re.compile(rf"{re.escape(experiment.name)}(-smoke)?(-e\d+)?")
        names = [e.name for e in self._store.client.search_experiments() if pattern.fullmatch(e.name)]
        return sorted(n for n in names if self._store.trial_runs(n))

    def epoch_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` pairs in epoch order, one per epoch: the first logged, as ``EpochLog`` keeps it."""
        by_step: dict[int, float] = {}
        for metric in sorted(self._store.client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            by_step.setdefault(metric.step, metric.value)
        return sorted(by_step.items())

    def json_artifact(self, run_id: str, path: str = ENERGY_ARTIFACT) -> Any | None:
        """A JSON artifact of the run, or ``None`` when the run has not written it (yet) or it is cut short."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return json.loads(Path(self._store.client.download_artifacts(run_id, path, tmp)).read_text())
            except (MlflowException, OSError, ValueError):
                return None

    def costs(self, rows: Sequence[RowResult], name: str) -> tuple[list[RowCost], Plan | None]:
        """What each row cost beside the latest ``sfh plan`` of the tracked ``name`` (None without one)."""
        plan = latest_plan(self._store, name)
        return row_costs(self._store, list(rows), plan), plan


# --- what each row cost ------------------------------------------------------------------------------------


@dataclass
class RowCost:
    """What a row cost (its finished seeds) beside what the plan projected for them."""

    row: str
    finished: int
    device_hours: float | None
    energy_kWh: float | None
    #: Where the energy came from, or why there is none.
    energy_note: str
    #: The plan's device-hours for the finished seeds (for all planned seeds when none finished).
    planned_device_hours: float | None
    #: Mean over finished seeds of training time / the plan's training time per trial.
    plan_ratio: float | None
    #: Inference energy per image on neuromorphic hardware (45 nm): ours and the paper's, mJ.
    inference_mJ: float | None
    paper_inference_mJ: float | None
    #: The plan's price of ``planned_device_hours`` (``sfh plan --price-per-device-hour``), None without one.
    planned_cost: float | None = None


def row_costs(store: tracking.Tracking, rows: list[RowResult], plan: Plan | None) -> list[RowCost]:
    """Each row's cost from its finished trial runs, beside ``plan``'s projection of it."""
    costs = []
    for r in rows:
        done = r.finished
        planned = plan.row(r.row_id) if plan is not None else None
        hours = [s.metrics[DEVICE_HOURS] for s in done if DEVICE_HOURS in s.metrics]
        kwh = [s.metrics[ENERGY_KWH] for s in done if ENERGY_KWH in s.metrics]
        unrecorded = f"{NA}: not recorded by this run"
        notes = sorted({store.client.get_run(s.run_id).data.tags.get(ENERGY_SOURCE, unrecorded) for s in done})
        times = [s.metrics[TRAIN_TIME_S] for s in done if TRAIN_TIME_S in s.metrics]
        per_seed = planned.device_hours / planned.seeds if planned is not None else None
        costs.append(RowCost(
            row=r.row_id, finished=len(done), device_hours=sum(hours) if hours and len(hours) == len(done) else None,
            energy_kWh=sum(kwh) if kwh and len(kwh) == len(done) else None, energy_note="; ".join(notes),
            planned_device_hours=None if per_seed is None else per_seed * (len(done) or planned.seeds),
            plan_ratio=statistics.fmean(times) / planned.train_s if times and planned is not None else None,
            inference_mJ=r.energy_mJ, paper_inference_mJ=r.paper.energy_mJ,
            planned_cost=None if per_seed is None else plan.cost(per_seed * (len(done) or planned.seeds)),
        ))
    return costs


def render_costs(costs: list[RowCost], plan: Plan | None) -> str:
    """The cost table (markdown) with the energy notes and the plan it compares with."""
    lines = [
        "| row | seeds done | device-h (ours / plan) | time ours / plan | training kWh "
        "| inference mJ/img (ours / paper) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        lines.append(
            f"| {c.row} | {c.finished} | {format_pair(c.device_hours, c.planned_device_hours)} "
            f"| {NA if c.plan_ratio is None else f'{c.plan_ratio:.2f}'} | {format_number(c.energy_kWh)} "
            f"| {format_pair(c.inference_mJ, c.paper_inference_mJ)} |"
        )
    lines.append("")
    if plan is None:
        lines.append("No plan for this experiment yet: `sfh plan EXP` projects it.")
    else:
        price = plan.cost(plan.device_hours)
        lines.append(f"Plan: {plan.file} on {plan.device}, {format_duration(plan.wall_s)} wall-clock for all its "
                     f"trials, {plan.device_hours:.3g} device-hours, {format_kwh(plan.energy_kWh)} kWh"
                     + ("." if price is None else
                        f", {format_money(price)} at {plan.price_per_device_hour:g} per device-hour."))
    for note in sorted({c.energy_note for c in costs if c.energy_note}):
        lines.append(f"- training energy: {note}")
    return "\n".join(lines) + "\n"


# --- rendering ---------------------------------------------------------------------------------------------


def grid_cells(rows: Sequence[RowResult]) -> tuple[list[str], list[list[str]]]:
    """A grid's extra columns (its axes, then the paper row each point equals) and each row's cells in them;
    none for a plain table."""
    names = axes(rows)
    if not names:
        return [], [[] for _ in rows]
    cells = [[format_value(r.point[a]) if a in r.point else NA for a in names] + [r.reference or NO_REFERENCE]
             for r in rows]
    return [*names, "paper row"], cells


def render_markdown(rows: Sequence[RowResult]) -> str:
    """The paper-vs-reproduced table (best = best test epoch, as the paper reports; last = final epoch).

    A grid gets one column per axis and the paper row each point equals, after the row id.
    """
    extra, cells = grid_cells(rows)
    lines = [
        "| row | " + "".join(f"{name} | " for name in extra) + "paper top-1 | best top-1 | last top-1 | Δ best (pp) "
        "| params M (ours / paper) | SOPs G (ours / paper) | energy mJ (ours / paper) | seeds | verdict "
        "| vs the authors' curve |",
        "|---|" + "---:|" * (len(extra) - 1) + "---|" * bool(extra) + "---:|" * 8 + "---|---|",
    ]
    for r, grid in zip(rows, cells, strict=True):
        lines.append(
            f"| {r.row_id} | " + "".join(f"{c} | " for c in grid)
            + f"{format_number(r.paper.top1)} | {format_spread(r.best_top1_mean, r.best_top1_sd)} "
            f"| {format_spread(r.last_top1_mean, r.last_top1_sd)} | {format_delta(r.delta)} "
            f"| {format_pair(r.params_M, r.paper.params_M)} | {format_pair(r.sops_G, r.paper.sops_G)} "
            f"| {format_pair(r.energy_mJ, r.paper.energy_mJ)} | {len(r.finished)}/{len(r.runs)} | {r.verdict} "
            f"| {r.convergence} |"
        )
    ended = [f"- {r.row_id} seed {s.seed}: {s.status}: {s.failure or 'no reason recorded'}"
             for r in rows for s in r.runs if s.status in ("FAILED", "KILLED")]
    departed = [f"- {r.row_id} {line}" for r in rows if r.verdict == NOT_COMPARABLE for line in batch_departures(r)]
    notes = [("Runs that did not finish:", ended),
             ("Not comparable (the model couples each sample to its batch, run at other per-rank batches than "
              "upstream's):", departed)]
    return "\n".join(lines) + "\n" + "".join(f"\n{title}\n" + "\n".join(items) + "\n" for title, items in notes
                                             if items)


CSV_COLUMNS = (
    "experiment", "row", "paper_top1", "best_top1_mean", "best_top1_sd", "last_top1_mean", "last_top1_sd", "delta",
    "params", "paper_params_M", "sops_G", "paper_sops_G", "energy_mJ", "paper_energy_mJ", "seeds_finished",
    "seeds", "verdict", "paper_source", "point", "reference", "reference_curve", "convergence",
    # What the row cost, as the markdown's cost table shows it (empty without ``costs``).
    "device_hours", "planned_device_hours", "time_vs_plan", "training_kWh", "training_energy", "planned_cost",
)


def render_csv(rows: Sequence[RowResult], costs: Sequence[RowCost] | None = None) -> str:
    """One header, then one line per row; rows of several experiments go in one call (the experiment column).
    ``costs`` (one per row, in order, from :func:`row_costs`) fills the cost columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r, c in zip(rows, costs or [None] * len(rows), strict=True):
        spent = ["", "", "", "", "", ""] if c is None else [
            c.device_hours, c.planned_device_hours, c.plan_ratio, c.energy_kWh, c.energy_note, c.planned_cost]
        writer.writerow([
            r.experiment, r.row_id, r.paper.top1, r.best_top1_mean, r.best_top1_sd, r.last_top1_mean, r.last_top1_sd,
            r.delta, r.params, r.paper.params_M, r.sops_G, r.paper.sops_G, r.energy_mJ, r.paper.energy_mJ,
            len(r.finished), len(r.runs), r.verdict, r.paper.source,
            ";".join(f"{k}={format_value(v)}" for k, v in r.point.items()), r.reference or "", r.curve or "",
            r.convergence, *("" if v is None else v for v in spent),
        ])
    return out.getvalue()


def format_table(experiment: Experiment, tracking_uri: str, *, name: str | None = None) -> str:
    """One experiment's markdown table, under a title line naming the paper table and the tolerance."""
    rows = collect(experiment, tracking_uri, name=name)
    tol = experiment.tolerance
    title = (
        f"## {name or experiment.name}: {experiment.paper.table} (arXiv {experiment.paper.arxiv})\n\n"
        f"PASS within ±{tol.pass_pp:g} pp of the paper's top-1, WARN within ±{tol.warn_pp:g} pp, else FAIL.\n\n"
    )
    grid = axes(experiment.rows)
    if grid:
        title += (f"Grid over {' x '.join(grid)}: {len(experiment.rows)} points; a point equal to a paper row carries "
                  f"its numbers (paper row column), the others have {NO_REFERENCE}.\n\n")
    notes = [f"- {row.id}: {note}" for row in experiment.rows if (note := experiment.accumulation_note(row))]
    if notes:
        title += "Gradient accumulation keeps the paper's global batch:\n" + "\n".join(notes) + "\n\n"
    store = tracking.Tracking(tracking_uri)
    plan = latest_plan(store, name or experiment.name)
    costs = render_costs(row_costs(store, rows, plan), plan)
    return title + render_markdown(rows) + "\n" + costs
