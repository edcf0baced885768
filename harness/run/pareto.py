"""A multi-objective search's answer: the study's Pareto front (``study.best_trials``).

The front is printed as a table, written as an experiment file with one row per point (``sfh reproduce`` trains
each under the base row's full recipe), marked on the trials' MLflow runs (tag ``sfh.search.front``, redone at
every invocation since a new trial can push an old point off the front) and logged to the invocation's parent
run as a table and a figure: every finished trial of the study as a point, the front highlighted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import optuna
import yaml

from harness import tracking
from harness.experiment.objectives import Objective
from harness.experiment.search_space import Search
from harness.run.study import MLFLOW_RUN_ID

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

#: Tag on every trial run of a multi-objective search: "true" on the front's points, "false" elsewhere.
FRONT_TAG = "sfh.search.front"
FRONT_TABLE, FRONT_FIGURE = "pareto_front.md", "pareto_front.png"


@dataclass(frozen=True)
class Point:
    """One trial on the front figure: its values on the two plotted objectives, labelled by trial number."""

    label: str
    x: float
    y: float


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's Pareto front, in order of its first objective."""
    return sorted(study.best_trials, key=lambda t: t.values[0])


def axes(objectives: Sequence[Objective]) -> tuple[int, int]:
    """Which objectives the figure plots (x, y): top-1 up the y axis where searched, else the first; the next
    one along x."""
    names = [o.name for o in objectives]
    y = names.index("top1") if "top1" in names else 0
    return (1 if y == 0 else 0), y


def front_table(search: Search, trials: Sequence[optuna.trial.FrozenTrial]) -> str:
    """The front as a markdown table: trial, objective values, sampled values, MLflow run."""
    assert search.objectives is not None
    keys = list(search.space)
    head = ["trial", *search.objective_names, *keys, "MLflow run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        cells = [str(t.number), *(f"{v:.4g}" for v in t.values), *(_fmt(t.params.get(k)) for k in keys),
                 t.user_attrs.get(MLFLOW_RUN_ID, "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_front(path: Path, points: Sequence[Point], front_points: Sequence[Point], xlabel: str, ylabel: str,
               title: str, published: Sequence[Point] = ()) -> Path:
    """Every trial as a grey point, the front as red stars joined in order, published rows as black diamonds."""
    fig, ax = plt.subplots(figsize=(7.0, 4.4), dpi=96)
    ax.scatter([p.x for p in points], [p.y for p in points], s=28, color="#9a9a9a", label="trial", zorder=2)
    ordered = sorted(front_points, key=lambda p: p.x)
    ax.plot([p.x for p in ordered], [p.y for p in ordered], "-*", color="#d62728", markersize=13, linewidth=1,
            label="Pareto front", zorder=3)
    for p in ordered:
        ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(6, -10), fontsize=7)
    if published:
        ax.scatter([p.x for p in published], [p.y for p in published], marker="D", s=40, color="#222222",
                   label="published", zorder=3)
        for p in published:
            ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def study_figure(search: Search, study: optuna.Study, path: Path) -> Path:
    """The study's finished trials on the first two plotted objectives, the front highlighted."""
    assert search.objectives is not None
    x, y = axes(search.objectives)
    done = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    names = search.objective_names
    return draw_front(path, [Point(str(t.number), t.values[x], t.values[y]) for t in done],
                      [Point(f"trial {t.number}", t.values[x], t.values[y]) for t in front(study)],
                      names[x], names[y], f"{study.study_name}: {len(done)} trials, Pareto front")


def write_front(search: Search, study: optuna.Study, out: Path, storage_url: str) -> list[optuna.trial.FrozenTrial]:
    """The front as an experiment file, one row ``trial-<n>`` per point, for ``sfh reproduce``."""
    points = front(study)
    note = (f"Pareto front of search {search.name} ({', '.join(search.objective_names)}): Optuna study "
            f"{study.study_name} ({storage_url}), trials {', '.join(str(t.number) for t in points)}, "
            "under the search budget")
    mapping = search.tuned_experiment({f"trial-{t.number}": t.params for t in points}, "front", note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {note}.\n# Train every point with the base row's full recipe: sfh reproduce {out}\n"
                   f"# (one point: sfh reproduce {out} --rows trial-<n>)\n" + yaml.safe_dump(mapping, sort_keys=False))
    return points


def log_front(store: tracking.Tracking, parent: str, search: Search, study: optuna.Study, out: Path,
              folder: Path) -> None:
    """Mark the front on the trials' runs, and log its table and figure on the invocation's parent run."""
    points = front(study)
    on_front = {t.user_attrs.get(MLFLOW_RUN_ID) for t in points}
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get(MLFLOW_RUN_ID)
        if run_id is not None:
            store.set_tags(run_id, {FRONT_TAG: str(run_id in on_front).lower()})
    store.log_text(parent, front_table(search, points), FRONT_TABLE)
    store.client.log_artifact(parent, str(study_figure(search, study, folder / FRONT_FIGURE)))
    store.set_tags(parent, {FRONT_TAG: ", ".join(f"trial {t.number}" for t in points),
                            "sfh.search.front_file": str(out)})


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
