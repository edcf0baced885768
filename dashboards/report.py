"""The report of one experiment: ``<out>/<name>/index.html`` plus its PNG figures, built from MLflow.

Sections, in reading order: the paper-vs-reproduced table (``harness.results``), accuracy against energy
and parameters among the paper's and the peers' points, training curves against the authors' own (their
published logs, as data) with each seed's gap to them, and the per-layer firing-rate and energy breakdown of
each run. Rows that are running or never ran, and runs
without epochs or artifacts yet, render as such: nothing here assumes a finished experiment.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path

from dashboards import figures, markup
from dashboards.peers import EVIDENCE, Peer, load_peers, peers_for
from harness import results
from harness.results import E_AC_PJ, EnergyLog, ReferenceCurve, RowResult, RowSetup, RunReader, SeedRun

FIGURES = "figures"


@dataclass(frozen=True)
class Context:
    """Everything the sections share while one report is written."""

    experiment: results.Experiment
    rows: Sequence[RowResult]
    setups: dict[str, RowSetup]
    runs: RunReader
    folder: Path
    #: Each row's reference curve (the authors' log, as this repository's data), None where none was published.
    curves: dict[str, ReferenceCurve | None]

    def figure(self, stem: str) -> Path:
        return self.folder / FIGURES / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"

    def embed(self, path: Path, caption: str) -> str:
        return markup.figure(path.relative_to(self.folder).as_posix(), caption)


def write_report(
    experiment: results.Experiment,
    rows: Sequence[RowResult],
    runs: RunReader,
    out: Path,
    *,
    name: str | None = None,
) -> Path:
    """Write ``out/<name>/index.html`` (figures beside it, old ones removed) and return its path."""
    name = name or experiment.name
    folder = out / name
    shutil.rmtree(folder / FIGURES, ignore_errors=True)
    (folder / FIGURES).mkdir(parents=True)
    ctx = Context(experiment, rows, results.row_setups(experiment), runs, folder, results.reference_curves(experiment))
    sections = [_table(ctx), *_grid(ctx), _tradeoffs(ctx), _curves(ctx), _energy(ctx), _cost(ctx, name)]
    paper = experiment.paper
    compared = f"Compared with arXiv {paper.arxiv}: {paper.table}." if paper.arxiv != "-" else f"{paper.table}."
    subtitle = (
        (f"{experiment.description.rstrip('.')}. " if experiment.description else "") + compared
        + f" Tracking: {runs.uri}. Generated {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}."
    )
    index = folder / "index.html"
    index.write_text(markup.page(f"Spikingformer reproduction: {name}", subtitle, sections))
    return index


def write_index(out: Path, across: Sequence[results.FamilyLine] = ()) -> Path:
    """``out/index.html``: a link to every report in ``out``, rendered now or earlier, newest first, and the
    cross-family table of the rows in ``across`` (those of the experiments rendered now)."""
    pages = sorted(out.glob("*/index.html"), key=lambda p: p.stat().st_mtime, reverse=True)
    rows = [
        [
            f'<td class="text"><a href="{escape(p.parent.name)}/index.html">{escape(p.parent.name)}</a></td>',
            markup.text_cell(f"{datetime.fromtimestamp(p.stat().st_mtime).astimezone():%Y-%m-%d %H:%M %Z}"),
        ]
        for p in pages
    ]
    body = markup.table(["experiment", "rendered"], rows) if rows else markup.note("no report yet")
    index = out / "index.html"
    sections = [markup.Section("all", "Reports", body)]
    if across:
        sections.append(_families(across))
    index.write_text(markup.page("Spikingformer reproduction: reports", str(out), sections))
    return index


def _families(lines: Sequence[results.FamilyLine]) -> markup.Section:
    """Every row of every family rendered, on one ruler: the family's own paper's counting and the common one."""
    header = ["table", "row", "model", "dataset", "T", "params M", "SOPs G (paper conv. / common)",
              "energy mJ (paper conv. / common / paper)", "energy mJ memory-incl. (SNN / bit-matched ANN)",
              "firing rate (measured / break-even)", "top-1 (paper / ours)", "seeds", "verdict"]
    rows = [
        [
            markup.text_cell(line.table), markup.text_cell(line.row), markup.text_cell(line.model),
            markup.text_cell(line.dataset), str(line.time_steps), results.format_number(line.result.params_M),
            f"{results.format_number(line.result.sops_G)} / {results.format_number(line.sops_common)}",
            f"{results.format_number(line.result.energy_mJ)} / {results.format_number(line.energy_common)} / "
            f"{results.format_number(line.result.paper.energy_mJ)}",
            f"{results.format_number(line.energy_memory)} / {results.format_number(line.energy_qann)}",
            f"{results.format_number(line.firing_rate)} / {results.format_number(line.break_even_rate)}",
            results.format_pair(line.result.paper.top1, line.result.best_top1_mean),
            f"{len(line.result.finished)}/{len(line.result.runs)}", markup.verdict(line.result.verdict),
        ]
        for line in lines
    ]
    legend = ("<p class='small'>Energy per image under each row's own paper's convention (paper conv.: compute "
              "only, 4.6 pJ per MAC and 0.9 pJ per AC), under the common ruler (Spikingformer's rules applied to every "
              "family) and as the paper printed it; then memory-inclusive (Lemaire et al. 2022: 45 nm integer "
              "arithmetic plus SRAM traffic for weights, membrane potentials and spikes) for the spiking model and "
              "for the same network as a quantized ANN with ceil(log2(T+1))-bit activations, and the firing rate "
              "below which the spiking model costs less than that ANN (docs/energy.md). Best top-1, mean over "
              "finished seeds. The same table as <code>sfh compare</code>.</p>")
    return markup.Section("families", "Across families", markup.table(header, rows) + legend)


# --- paper vs reproduced ---------------------------------------------------------------------------------


def _table(ctx: Context) -> markup.Section:
    tol = ctx.experiment.tolerance
    extra, cells = results.grid_cells(ctx.rows)
    header = [
        "row", *extra, "verdict", "paper top-1", "best top-1", "last top-1", "Δ best (pp)", "params M (ours / paper)",
        "SOPs G (ours / paper)", "energy mJ (ours / paper)", "seeds done", "runs",
    ]  # fmt: skip
    rows = [
        [
            markup.text_cell(r.row_id, title=f"paper: {r.paper.source}" if r.paper.source else ""),
            *(markup.text_cell(c) for c in grid),
            markup.verdict(r.verdict),
            results.format_number(r.paper.top1),
            results.format_spread(r.best_top1_mean, r.best_top1_sd),
            results.format_spread(r.last_top1_mean, r.last_top1_sd),
            results.format_delta(r.delta),
            results.format_pair(r.params_M, r.paper.params_M),
            results.format_pair(r.sops_G, r.paper.sops_G),
            results.format_pair(r.energy_mJ, r.paper.energy_mJ),
            f"{len(r.finished)}/{len(r.runs)}",
            markup.text_cell("; ".join(f"seed {run.seed}: {run.status}" + (f" ({run.failure})" if run.failure else "")
                                       for run in r.runs) or "none"),
        ]
        for r, grid in zip(ctx.rows, cells, strict=True)
    ]  # fmt: skip
    legend = (
        f"<p class='small'>Best top-1 is the best test epoch, as the paper reports; last is the final epoch. "
        f"Mean ± sd over finished seeds. PASS within ±{tol.pass_pp:g} pp of the paper, WARN within "
        f"±{tol.warn_pp:g} pp, else FAIL; RUNNING while a seed trains; NOT RUN without runs; NOT COMPARABLE where "
        f"the model couples each sample to its batch and ran at other per-rank batches than upstream's. "
        f"Hover a row for the paper numbers' provenance.</p>"
    )
    description = f"<p>{escape(ctx.experiment.description)}</p>" if ctx.experiment.description else ""
    counts = markup.verdict_counts([r.verdict for r in ctx.rows])
    return markup.Section("table", "Paper vs reproduced", description + counts + markup.table(header, rows) + legend)


# --- a grid against its axes ----------------------------------------------------------------------------

# RowResult attribute of our mean, of its sd (None: none), of the paper's value; axis label; file word
_GRID_METRICS = (
    ("best_top1_mean", "best_top1_sd", "top1", "best top-1 (%)", "top1"),
    ("energy_mJ", None, "energy_mJ", "energy per image (mJ)", "energy"),
)


def _grid(ctx: Context) -> list[markup.Section]:
    """Per axis of a grid, top-1 and energy against it: one line per combination of the other axes (the
    row id without this axis names it), the points equal to a paper row marked with the paper's value."""
    names = results.axes(ctx.rows)
    if not names:
        return []
    parts = []
    for axis in names:
        groups: dict[str, list[RowResult]] = {}
        for r in ctx.rows:
            segment = f"/{axis}={results.format_value(r.point[axis])}"
            head, _, tail = r.row_id.rpartition(segment)
            groups.setdefault(head + tail, []).append(r)
        figs = []
        for mean, sd, paper, ylabel, word in _GRID_METRICS:
            lines = [
                figures.AxisLine(
                    label,
                    [r.point[axis] for r in rows],
                    [getattr(r, mean) for r in rows],
                    [getattr(r, sd) if sd else None for r in rows],
                    [getattr(r.paper, paper) if r.reference else None for r in rows],
                )
                for label, rows in groups.items()
            ]
            title = f"{ylabel} against {axis}"
            path = figures.axis_lines(ctx.figure(f"grid-{word}-{axis}"), lines, axis, ylabel, title)
            figs.append(ctx.embed(path, title))
        parts.append(f"<h3>{escape(axis)}</h3>" + f'<div class="grid">{"".join(figs)}</div>')
    intro = (
        f"<p class='small'>Grid over {escape(' x '.join(names))}: per axis, one line per combination of the other "
        "axes (named by the point ids without that axis); mean ± sd over finished seeds. Hollow diamonds: the "
        f"paper's value where a point equals a paper row; the other points have {results.NO_REFERENCE}.</p>"
    )
    return [markup.Section("grid", "Grid by axis", intro + "".join(parts))]


# --- accuracy vs cost ------------------------------------------------------------------------------------

_COSTS = (("energy_mJ", "energy per image (mJ)", "energy"), ("params_M", "parameters (M)", "params"))


def _tradeoffs(ctx: Context) -> markup.Section:
    peers = load_peers()
    parts = []
    for dataset in dict.fromkeys(s.dataset for s in ctx.setups.values()):
        rows = [r for r in ctx.rows if ctx.setups[r.row_id].dataset == dataset]
        others = peers_for(peers, dataset)
        figs = []
        for key, label, word in _COSTS:
            points = _cost_points(rows, others, key)
            if points:
                path = figures.accuracy_scatter(
                    ctx.figure(f"tradeoff-{dataset}-{word}"),
                    points,
                    label,
                    f"{dataset}: top-1 vs {word}",
                    families=[p.model for p in peers],
                )
                figs.append(ctx.embed(path, f"{dataset}: top-1 against {word}"))
        parts.append(f"<h3>{escape(dataset)}</h3>")
        parts.append(f'<div class="grid">{"".join(figs)}</div>' if figs else markup.note("nothing to plot yet"))
        if others:
            parts.append(_peer_table(others))
    intro = (
        "<p class='small'>Red stars: this reproduction (mean best top-1 ± sd over finished seeds), linked by a "
        "dotted line to the paper's point for the same row. Peers as published; hollow markers are values "
        "recalled from a paper and not re-verified (evidence M).</p>"
    )
    return markup.Section("tradeoffs", "Accuracy vs energy and parameters", intro + "".join(parts))


def _cost_points(rows: Sequence[RowResult], peers: Sequence[Peer], key: str) -> list[figures.Point]:
    """``key`` names the cost on our rows, the paper's numbers and the peers alike (energy_mJ, params_M)."""
    points = []
    for r in rows:
        paper_cost = getattr(r.paper, key)
        if r.paper.top1 is not None and paper_cost is not None:
            points.append(figures.Point(figures.PAPER, r.row_id, paper_cost, r.paper.top1))
        ours_cost = getattr(r, key)
        if r.best_top1_mean is not None and ours_cost is not None:
            points.append(figures.Point(figures.OURS, r.row_id, ours_cost, r.best_top1_mean, r.best_top1_sd))
    for p in peers:
        cost = getattr(p, key)
        if cost is not None:
            label = p.variant if p.time_steps in (1, 4) else f"{p.variant} T={p.time_steps}"
            points.append(figures.Point(p.model, label, cost, p.top1, unverified=p.unverified("top1", key)))
    return points


def _peer_table(peers: Sequence[Peer]) -> str:
    def value(p: Peer, key: str) -> str:
        number = getattr(p, key)
        return results.NA if number is None else f"{results.format_number(number)} [{p.evidence[key]}]"

    rows = [
        [
            markup.text_cell(p.model),
            markup.text_cell(p.variant),
            str(p.time_steps),
            value(p, "top1"),
            value(p, "params_M"),
            value(p, "energy_mJ"),
            markup.text_cell(p.source + (f"; {p.note}" if p.note else "")),
        ]
        for p in peers
    ]
    marks = "; ".join(f"[{k}] {v}" for k, v in EVIDENCE.items())
    table = markup.table(["model", "variant", "T", "top-1 (%)", "params (M)", "energy (mJ)", "source"], rows)
    return f"<details><summary>Peer values plotted, with evidence ({marks})</summary>{table}</details>"


# --- training curves -------------------------------------------------------------------------------------


def _curves(ctx: Context) -> markup.Section:
    parts = []
    for r in ctx.rows:
        setup = ctx.setups[r.row_id]
        heading = f"<h3>{escape(r.row_id)}: {escape(setup.label)} on {escape(setup.dataset)}, T={setup.time_steps}</h3>"
        curve = ctx.curves[r.row_id]
        notes = "" if curve is not None else markup.note("no reference curve: the authors published no training log "
                                                         "of this row")
        if not r.runs:
            target = "; the authors' run alone, as the target" if curve is not None else ""
            notes = markup.note(f"{r.verdict}: no run of this row yet{target}") + notes
            if curve is None:
                parts.append(heading + notes)
                continue
        top1, loss = _run_lines(ctx.runs, r.runs)
        if curve is not None:
            reference = _reference_lines(curve, setup.total_epochs)
            top1.append(reference[0])
            loss.extend(reference[1:])
            notes += markup.note(_provenance(curve, setup.total_epochs))
        seeds = ", ".join(f"seed {run.seed} {run.status}" for run in r.runs) or r.verdict
        title = f"{r.row_id} ({seeds})"
        path = figures.training_curves(ctx.figure(f"curves-{r.row_id}"), title, top1, loss, r.paper.top1)
        parts.append(heading + notes + ctx.embed(path, f"{r.row_id}: test top-1 and loss per epoch"))
        if curve is not None and r.runs:
            parts.append(_gap(ctx, r, curve, setup.total_epochs))
    intro = (
        "<p class='small'>Solid: test top-1 and training loss per epoch of each seed; dashed: evaluation loss "
        "(and EMA top-1 when used). Grey: the authors' run, from the training log they published (extracted into "
        "experiments/reference/, source and sha256 below each figure), laid on this row's schedule by fraction of "
        "the schedule. Dotted line: the paper's top-1. Under it, where a reference exists: each seed's gap to the "
        "reference per evaluated epoch and the band within which it is on track (docs/convergence.md).</p>"
    )
    return markup.Section("curves", "Training curves", intro + "".join(parts))


def _reference_lines(curve: ReferenceCurve, total_epochs: int) -> list[figures.Line]:
    """The reference's top-1, training and test loss on the row's epochs (epoch e of N at (e+1)/N x total - 1)."""
    epochs = [(e + 1) / curve.total_epochs * total_epochs - 1 for e in curve.epochs]
    lines = [figures.Line(curve.label, epochs, list(curve.top1), reference=True)]
    for values, name, dashed in ((curve.train_loss, "train", False), (curve.eval_loss, "eval", True)):
        if all(v is not None for v in values):
            lines.append(figures.Line(f"{curve.label} {name}", epochs, list(values), reference=True, dashed=dashed))
    return lines


def _provenance(curve: ReferenceCurve, total_epochs: int) -> str:
    source = curve.source
    where = f"{source.repository}@{source.commit}:{source.path} (sha256 {source.sha256[:12]}...)" if source else ""
    scale = "" if curve.total_epochs == total_epochs else f", drawn on this row's {total_epochs} epochs"
    return (f"reference: {curve.label}, {curve.total_epochs} epochs{scale}, best {curve.best[1]:.2f} at epoch "
            f"{curve.best[0]}; from {where}; band {curve.band_pp} points ({curve.dataset})")


def _gap(ctx: Context, r: RowResult, curve: ReferenceCurve, total_epochs: int) -> str:
    gaps = []
    for i, run in enumerate(r.runs):
        history = ctx.runs.epoch_history(run.run_id, results.GAP_TO_REFERENCE)
        if history:
            epochs, values = zip(*history, strict=True)
            gaps.append(figures.Line(f"seed {run.seed}", epochs, values, group=i))
    if not gaps:
        return markup.note(f"{r.row_id}: no {results.GAP_TO_REFERENCE} logged (runs tracked before the guard)")
    epochs = list(range(total_epochs))
    band = [curve.band_at((e + 1) / total_epochs) for e in epochs]
    status = "; ".join(f"seed {run.seed}: {run.convergence}" for run in r.runs if run.convergence)
    path = figures.gap_curve(ctx.figure(f"gap-{r.row_id}"), f"{r.row_id}: gap to the reference", gaps,
                             (epochs, band))
    return (markup.note(status) if status else "") + ctx.embed(path, f"{r.row_id}: test top-1 minus the reference")


# metric, legend name, panel, dashed
_CURVES = (
    ("top1", "top-1", "top1", False),
    ("ema_top1", "EMA top-1", "top1", True),
    ("train_loss", "train", "loss", False),
    ("eval_loss", "eval", "loss", True),
)


def _run_lines(reader: RunReader, runs: Sequence[SeedRun]) -> tuple[list[figures.Line], list[figures.Line]]:
    top1: list[figures.Line] = []
    loss: list[figures.Line] = []
    for i, run in enumerate(runs):
        for key, name, target, dashed in _CURVES:
            history = reader.epoch_history(run.run_id, key)
            if history:
                epochs, values = zip(*history, strict=True)
                target_list = top1 if target == "top1" else loss
                target_list.append(figures.Line(f"seed {run.seed} {name}", epochs, values, dashed=dashed, group=i))
    return top1, loss


# --- per-layer firing rates and energy -------------------------------------------------------------------


@dataclass
class _EnergyPass:
    """One run's logged energy pass, read before any figure is drawn (they share one energy scale)."""

    row: RowResult
    run: SeedRun
    report: dict | None
    bars: list[figures.LayerBar]
    matched: bool
    problem: str | None


def _energy_passes(ctx: Context) -> list[_EnergyPass]:
    passes = []
    for r in ctx.rows:
        reference = results.reference_energy(ctx.curves[r.row_id])
        for run in r.runs:
            report = ctx.runs.json_artifact(run.run_id)
            bars, matched, problem = [], False, None
            if report is not None:
                try:
                    bars, matched = _layer_bars(report, reference)
                    report["totals"]["energy_mJ"]  # noqa: B018 (present in every pass this harness writes)
                except (KeyError, TypeError) as err:  # written by an older harness
                    problem = f"{results.ENERGY_ARTIFACT} lacks {err}; re-run its energy pass"
            passes.append(_EnergyPass(r, run, report, bars, matched, problem))
    return passes


def _energy(ctx: Context) -> markup.Section:
    passes = _energy_passes(ctx)
    scale = max((max(b.energy_mJ, b.reference_energy_mJ or 0.0) for p in passes for b in p.bars), default=None)
    shown: dict[str, list[str]] = {}
    for p in passes:
        caption = f"{p.row.row_id} seed {p.run.seed}"
        items = shown.setdefault(p.row.row_id, [])
        if p.report is None or p.problem:
            items.append(markup.note(f"{caption}: {p.problem}" if p.problem else
                                     f"{caption} ({p.run.status}): no energy pass logged yet"))
            continue
        curve = ctx.curves[p.row.row_id]
        title = f"{caption}: {ctx.setups[p.row.row_id].label}, {p.report['totals']['energy_mJ']:.4g} mJ per image"
        if p.matched:
            title += f" (upstream log {results.reference_energy(curve).energy_mJ:.4g} mJ)"
        label = curve.label.replace("(authors' log)", "(authors' energy log)") if p.matched else None
        path = figures.energy_breakdown(ctx.figure(f"energy-{p.row.row_id}-seed{p.run.seed}"), title, p.bars, label,
                                        energy_limit=scale)
        items.append(ctx.embed(path, f"{caption}: input firing rate and energy per layer")
                     + _memory_inclusive(ctx.runs.json_artifact(p.run.run_id, results.MEMORY_ARTIFACT), caption))
    parts = []
    for row_id, items in shown.items():
        more = f"<details><summary>{len(items) - 1} more seed(s)</summary>{''.join(items[1:])}</details>"
        parts.append(f"<h3>{escape(row_id)}</h3>" + items[0] + (more if len(items) > 1 else ""))
    if not parts:
        parts.append(markup.note("no run has been tracked yet"))
    intro = (
        "<p class='small'>Per counted layer (the family's paper convention): the input firing rate (100% marks a "
        "non-spike input, costed as MACs) and the energy per image, on one energy scale for every row and seed so "
        "that the families compare bar for bar; the last bar sums the attention matmuls of all "
        "blocks (ACs at the q/k/v rates). Black ticks: the authors' energy log of the same model (released "
        "checkpoint, full ImageNet val; extracted into experiments/reference/), matched layer by layer in forward "
        "order.</p>"
    )
    intro += (
        "<p class='small'>Under each figure, the memory-inclusive estimate of the same run: compute plus the SRAM "
        "traffic of weights, membrane potentials and spikes (Lemaire et al. 2022), against the same network as a "
        "quantized ANN with as many activation bits as T spikes carry, and the firing rate at which the two cost "
        "the same (docs/energy.md).</p>"
    )
    return markup.Section("energy", "Firing rates and energy per layer", intro + "".join(parts))


def _memory_inclusive(memory: dict | None, caption: str) -> str:
    """The run's memory-inclusive estimate beside its bit-matched quantized ANN, part by part (mJ per image)."""
    if memory is None:
        return markup.note(f"{caption}: no memory-inclusive estimate logged (a run from before it existed)")
    ann = memory["ann_parts"] or {}
    rows = [[markup.text_cell(part), results.format_number(mj), results.format_number(ann.get(part))]
            for part, mj in memory["snn_parts"].items()]
    rows.append([markup.text_cell("total"), results.format_number(memory["snn_mJ"]),
                 results.format_number(memory["ann_mJ"])])
    rate, even = memory["firing_rate"], memory["break_even_rate"]
    if memory["ann_mJ"] is None:
        verdict = "no bit-matched ANN for event inputs"
    elif even == 0.0:
        verdict = "the spiking model costs more than the ANN even with every neuron silent"
    else:
        saves = "saves" if rate < even else "does not save"
        verdict = (f"break-even firing rate {even:.4g}; measured {rate:.4g}: the spiking model {saves} energy "
                   f"({100 * memory['saving']:+.1f} % of the ANN's)")
    header = ["part", f"SNN T={memory['time_steps']} (mJ)", f"ANN {memory['ann_bits'] or '-'}-bit (mJ)"]
    return (f"<p>Memory-inclusive, {memory['images']} image(s) one at a time: {escape(verdict)}.</p>"
            + markup.table(header, rows)
            + f"<p class='small'>{escape(memory['costs']['source'])}; left out on both sides: "
              f"{escape(', '.join(memory['left_out']) or '-')}.</p>")


# --- what it cost -------------------------------------------------------------------------------------------


def _cost(ctx: Context, name: str) -> markup.Section:
    """Device-hours and training energy per row beside the plan's projection (rows not run yet: the projection
    alone), and the paper's inference energy per image beside the energy the reproduction took to train."""
    costs, plan = ctx.runs.costs(ctx.rows, name)
    header = [
        "row", "seeds done", "device-h ours", "device-h plan", "time ours / plan", "training kWh ours",
        "training kWh plan", "inference mJ/img ours", "inference mJ/img paper", "training energy",
    ]  # fmt: skip
    rows = []
    for c in costs:
        planned = plan.row(c.row) if plan is not None else None
        planned_kwh = None
        if planned is not None and planned.energy_kWh is not None:
            planned_kwh = planned.energy_kWh / planned.seeds * (c.finished or planned.seeds)
        rows.append([
            markup.text_cell(c.row), str(c.finished), results.format_number(c.device_hours),
            results.format_number(c.planned_device_hours),
            results.NA if c.plan_ratio is None else f"{c.plan_ratio:.2f}", results.format_number(c.energy_kWh),
            results.format_number(planned_kwh), results.format_number(c.inference_mJ),
            results.format_number(c.paper_inference_mJ), markup.text_cell(c.energy_note or "no finished run"),
        ])
    if plan is None:
        intro = markup.note(f"no plan of {name} yet: `sfh plan` measures each row's step and projects the run")
    else:
        intro = (
            f"<p>Plan ({escape(plan.file)}, measured on {escape(plan.device)}, {plan.steps} timed steps a row): "
            f"{plan.wall_s / 3600:.3g} h wall-clock for all its trials, {plan.device_hours:.3g} device-hours, "
            f"{results.format_number(plan.energy_kWh)} kWh ({escape(plan.energy_basis)}).</p>"
        )
    legend = (
        "<p class='small'>Device-hours: training time (the epochs' own timings) x workers, summed over finished "
        "seeds; the plan's for the same seeds, or for all planned seeds of a row not run yet. Time ours / plan: "
        "the mean finished seed's training time over the plan's. Training kWh: the devices' energy counters, "
        "n/a where there are none (the reason is in the last column). Inference mJ/img: the energy one image "
        "would take on 45 nm neuromorphic hardware (ours from the trial's energy pass, the paper's).</p>"
    )
    return markup.Section("cost", "What it cost", intro + markup.table(header, rows) + legend)


def _layer_bars(report: dict, reference: EnergyLog | None) -> tuple[list[figures.LayerBar], bool]:
    """Bars from ``energy_layers.json`` (``EnergyReport.to_dict``) and whether the upstream log's aligned."""
    layers = report["layers"]
    matched = reference is not None and len(reference.layers) == len(layers)
    bars = [
        figures.LayerBar(
            layer["name"],
            layer["input_rate"],
            layer["energy_mJ"],
            reference.layers[i].rate if matched else None,
            reference.layers[i].energy_mJ if matched else None,
        )
        for i, layer in enumerate(layers)
    ]
    if report["attention"]:
        ssa = sum(a["energy_mJ"] for a in report["attention"])
        upstream_ssa = E_AC_PJ * reference.ssa_acs_G if matched else None
        bars.append(figures.LayerBar(f"SSA matmuls ({len(report['attention'])} blocks)", None, ssa, None, upstream_ssa))
    return bars, matched
