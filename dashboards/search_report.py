"""A multi-objective search's page: every finished trial on the two plotted objectives, the Pareto front
highlighted, and the base experiment's published rows on the same axes where they are counted the same way.

Read from MLflow only: the trial runs of the search's experiment and their final figures (the objectives'
values), the front being the finished runs no other one dominates (the study's ``best_trials``, even after an
invocation that failed before it tagged the front). Published rows are the papers' own
figures, so they join only axes counted under the family's paper convention (or none: top-1, params);
under any other convention (the common ruler, ...) the published models would need their trained weights to be
counted again, and the page says so.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from mlflow.entities import Run

from dashboards import markup
from harness import tracking
from harness.experiment.objectives import Objective
from harness.experiment.search_space import Search
from harness.run.pareto import Point, axes, draw_front, on_front
from harness.run.search import OPTUNA_TRIAL
from spikingformer.evaluate import PAPER

#: Objective -> the published figure of a paper row that is counted the same way (its scale to ours).
PUBLISHED = {"top1": ("top1", 1.0), "params": ("params_M", 1e6), "energy_mJ": ("energy_mJ", 1.0),
             "sops_G": ("sops_G", 1.0)}


def published_points(search: Search, x: Objective, y: Objective) -> tuple[list[Point], str]:
    """The base experiment's rows with published figures on both axes, or none and why."""
    if search.base.experiment is None:
        return [], "The search starts from a recipe: no published rows."
    if any(o.name not in PUBLISHED or (o.convention or PAPER) != PAPER for o in (x, y)):
        return [], (f"Published rows are not drawn: the papers count {x.label} and {y.label} under their own "
                    "conventions, and counting a published model under another one needs its trained weights.")
    experiment = search.base_experiment()
    points = []
    for row in experiment.rows:
        values = [getattr(row.paper, PUBLISHED[o.name][0]) for o in (x, y)]
        if None not in values:
            scale = [PUBLISHED[o.name][1] for o in (x, y)]
            points.append(Point(f"{row.id} (paper)", values[0] * scale[0], values[1] * scale[1]))
    note = "" if points else f"No row of {experiment.name} publishes both {x.label} and {y.label}."
    return points, note


def _values(run: Run, objectives: tuple[Objective, ...]) -> list[float] | None:
    values = [run.data.metrics.get(o.figure) for o in objectives]
    return values if all(v is not None and math.isfinite(v) for v in values) else None


def _merge_repeats(points: list[Point]) -> list[Point]:
    """One point per position: trials that drew the same configuration share it, labelled together."""
    labels: dict[tuple[float, float], list[str]] = {}
    for p in points:
        labels.setdefault((p.x, p.y), []).append(p.label)
    return [Point(", ".join(names), x, y) for (x, y), names in labels.items()]


def write_search_report(search: Search, uri: str, out: Path, name: str | None = None) -> Path:
    """``out/<name>/index.html`` for the search tracked as ``name`` (default: the search's name)."""
    if not search.objectives:
        raise ValueError(f"{search.source}: a search page draws a Pareto front; this search has one metric "
                         f"({search.metric}): its trials are in the MLflow experiment {search.name}")
    name = name or search.name
    runs = tracking.Tracking(uri).trial_runs(name)
    ix, iy = axes(search.objectives)
    x, y = search.objectives[ix], search.objectives[iy]
    finished = [(r, v) for r in sorted(runs, key=lambda r: int(r.data.tags.get(OPTUNA_TRIAL, "-1")))
                if r.info.status == "FINISHED" and (v := _values(r, search.objectives)) is not None]
    front_flags = on_front([v for _, v in finished], search.objectives)
    trials, front, rows = [], [], []
    for (run, values), flag in zip(finished, front_flags, strict=True):
        point = Point(f"trial {run.data.tags.get(OPTUNA_TRIAL, '?')}", values[ix], values[iy])
        trials.append(point)
        if flag:
            front.append(point)
        sampled = ", ".join(f"{k}={run.data.params.get(k, '?')}" for k in search.space)
        rows.append([markup.text_cell(point.label), *(f"{v:.4g}" for v in values), "yes" if flag else "",
                     markup.text_cell(sampled), markup.text_cell(run.info.run_id[:8], run.info.run_id)])
    front = _merge_repeats(front)
    folder = out / name
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    published, why = published_points(search, x, y)
    figure = draw_front(folder / "figures" / "pareto.png", trials, front, x.label, y.label,
                        f"{name}: {len(trials)} trials, Pareto front ({len(front)} points)", published)
    caption = (f"Every finished trial of {name} (grey), the Pareto front (red stars) of "
               f"{' and '.join(search.objective_names)}" + (", published rows (black diamonds)" if published else ""))
    body = markup.figure(figure.relative_to(folder).as_posix(), caption)
    body += markup.note(why) if why else ""
    header = ["trial", *search.objective_names, "front", "sampled values", "MLflow run"]
    body += markup.table(header, rows) if rows else markup.note(f"no finished trial of {name} in {uri}")
    body += (f"<p class='small'>Train a front point with the base row's full recipe: "
             f"<code>sfh reproduce runs/search/{escape(name)}-front.yaml --rows trial-&lt;n&gt;</code></p>")
    index = folder / "index.html"
    sections = [markup.Section("front", "Pareto front", body)]
    index.write_text(markup.page(f"Search {name}: Pareto front", f"{search.source}. Tracking: {uri}.", sections))
    return index
