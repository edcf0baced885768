"""A search file: which row to tune, over which TrainConfig keys, on what budget; validated before Ray starts.

A search names a ``base`` (an experiment file and one of its rows, or a recipe and a model), a ``budget``
(TrainConfig overrides that hold only while searching: fewer epochs, a data subset) and a ``space`` of dotted
TrainConfig keys (``optim.lr``, ``augment.mixup_alpha``, ``model.kwargs.depth``, ...), each with one
distribution. Both ends of every range and every choice are checked against the base row's TrainConfig (and
model keys against the model's constructor, built on the meta device), so an unknown key or an impossible
value fails here naming the file and the key. A search ranks trials by one ``metric`` or keeps the Pareto front
of several ``objectives``; the best sampled values (or each front point's) come back as an experiment file, one
row per point: the base row plus those values, without the budget, which ``sfh reproduce`` trains like a paper
row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from harness.experiment import Experiment, load_experiment
from harness.experiment.objectives import Objective, check_reported
from harness.experiment.resolve import check_model, check_recipe, nest, read_yaml
from spikingformer._validation import (
    ConfigError,
    Section,
    deep_merge,
    require,
    require_folder_name,
    section_from_dict,
)
from spikingformer.config import ModelConfig

KINDS = ("uniform", "loguniform", "integer", "choice")
#: Why a key of a single-objective search is refused beside ``objectives``.
ONE_OR_SEVERAL = {
    "metric": "a search has either metric + mode or objectives",
    "mode": "a search has either metric + mode or objectives; each objective has its own mode",
    "asha": "Optuna cannot prune a multi-objective study, so every trial runs its whole budget: drop asha, "
            "or search one metric",
}


@dataclass
class Dimension(Section):
    """One key's distribution, exactly one of: ``uniform``/``loguniform``/``integer`` (both ends included)
    as ``[low, high]``, or ``choice`` as a list of values."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    integer: tuple[int, int] | None = None
    choice: tuple[int | float | str | bool | None, ...] | None = None

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    def validate(self, where: str) -> None:
        given = [k for k in KINDS if getattr(self, k) is not None]
        require(len(given) == 1, where, "distribution", given or None, f"exactly one of {list(KINDS)}")
        value = getattr(self, given[0])
        if given[0] == "choice":
            require(len(value) >= 1 and len(set(map(repr, value))) == len(value), where, "choice", list(value),
                     "a non-empty list of distinct values")
            return
        require(value[0] < value[1], where, given[0], list(value), "[low, high] with low < high")
        require(given[0] != "loguniform" or value[0] > 0, where, "loguniform", list(value), "low > 0")

    def candidates(self) -> list[Any]:
        """The values validation tries: both ends of a range, every choice."""
        return list(getattr(self, self.kind))

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        value = getattr(self, self.kind)
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(value))
        if self.kind == "integer":
            return trial.suggest_int(name, value[0], value[1])
        return trial.suggest_float(name, value[0], value[1], log=self.kind == "loguniform")


class Sampler:
    """Optuna define-by-run space: a Tune config ``{"overrides": ..., "optuna_trial": n}`` per Optuna trial.

    A module-level class, not a closure: Tune pickles its searcher (and this) into the experiment state.
    """

    def __init__(self, space: dict[str, Dimension]) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values = {key: dim.suggest(trial, key) for key, dim in self.space.items()}
        return {"overrides": nest(values), "optuna_trial": trial.number}


@dataclass
class Base(Section):
    """Where the tuned row starts: ``experiment`` (path relative to the search file) + ``row``, or
    ``recipe`` + ``model``. ``train``/``resources`` change it for good (they stay in the best row)."""

    experiment: str | None = None
    row: str | None = None
    recipe: str | None = None
    model: ModelConfig | None = None
    train: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        by_file = (self.experiment, self.row)
        by_recipe = (self.recipe, self.model)
        ok = (None not in by_file and by_recipe == (None, None)) or (None not in by_recipe and by_file == (None, None))
        if not ok:
            given = sorted(k for k in ("experiment", "row", "recipe", "model") if getattr(self, k) is not None)
            raise ConfigError(f"{where}: gives {given}; a base is either experiment + row, or recipe + model")
        check_recipe(self.recipe, where)


@dataclass
class Asha(Section):
    """ASHA rungs at ``grace_period * reduction_factor**k`` epochs; below the top 1/reduction_factor stops."""

    grace_period: int = 1
    reduction_factor: int = 2

    def validate(self, where: str) -> None:
        require(self.grace_period >= 1, where, "grace_period", self.grace_period, ">= 1")
        require(self.reduction_factor >= 2, where, "reduction_factor", self.reduction_factor, ">= 2")


@dataclass
class Search(Section):
    """A search space around one row, how to rank trials, and how many to run per invocation."""

    name: str
    base: Base
    space: dict[str, Dimension]
    description: str = ""
    #: TrainConfig overrides of the search trials only (not of the best row): shorter schedule, data subset.
    budget: dict[str, Any] = field(default_factory=dict)
    #: One objective: the last reported epoch's ``metric``, in ``mode`` (default top1, max); ASHA may stop trials.
    #: ``gap_to_reference``: top-1 minus the base row's reference curve at the same fraction of the schedule.
    metric: Literal["top1", "top5", "eval_loss", "gap_to_reference"] = "top1"
    mode: Literal["max", "min"] = "max"
    #: Several objectives instead (final figures of each trial, see :mod:`harness.experiment.objectives`): the
    #: study keeps their Pareto front. Optuna cannot prune such a study, so every trial runs its whole budget.
    objectives: tuple[Objective, ...] | None = None
    #: Optuna's sampler, seeded by ``seed``: TPE (one or several objectives) or NSGA-II.
    sampler: Literal["tpe", "nsgaii"] = "tpe"
    #: NSGA-II's generation size (TPE ignores it).
    population_size: int = 50
    #: Trials per invocation (``--trials`` overrides); the study keeps the trials of every invocation.
    num_samples: int = 8
    #: Trials at once (null: as many as the cluster fits).
    max_concurrent: int | None = 1
    #: Random trials (over the whole study) before TPE models the results.
    startup_trials: int = 5
    #: TPE seed (offset by the study's trial count, so a second invocation does not replay the first).
    seed: int | None = None
    #: ASHA's rungs; refused with ``objectives`` (None then).
    asha: Asha | None = field(default_factory=Asha)

    # Where the search was read from (error messages, the base's relative path); never a YAML key.
    source = ""

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Search:
        """Validate a parsed search file, its base row and every value of its space."""
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            space = {k: section_from_dict(Dimension, v, f"{where}: space.{k}") for k, v in data["space"].items()}
            data = {**data, "space": space}
        if isinstance(data, dict) and data.get("objectives") is not None:
            for key in ("metric", "mode", "asha"):
                if key in data:
                    raise ConfigError(f"{where}.{key}: not allowed with objectives ({ONE_OR_SEVERAL[key]})")
            objectives = data["objectives"]
            if isinstance(objectives, list):  # each item's own error, not the union's
                objectives = tuple(section_from_dict(Objective, o, f"{where}.objectives[{k}]")
                                   for k, o in enumerate(objectives))
            data = {**data, "objectives": objectives, "asha": None}
        search = section_from_dict(cls, data, where)
        search.source = where
        experiment = search.experiment()
        require(search.metric != "gap_to_reference" or experiment.rows[0].reference_curve is not None, where,
                "metric", search.metric, "a base row with a reference_curve")
        if search.objectives:
            check_reported(search.objectives, experiment.rows[0].model, where)
        for key, dim in search.space.items():
            for value in dim.candidates():
                _check_value(experiment, key, value, f"{where}: space.{key}")
        return search

    def validate(self, where: str) -> None:
        require_folder_name(self.name, where, "name")
        require(len(self.space) >= 1, where, "space", self.space, "at least one key")
        require(self.num_samples >= 1, where, "num_samples", self.num_samples, ">= 1")
        require(self.max_concurrent is None or self.max_concurrent >= 1, where, "max_concurrent",
                 self.max_concurrent, "null or >= 1")
        require(self.startup_trials >= 0, where, "startup_trials", self.startup_trials, ">= 0")
        require(self.population_size >= 2, where, "population_size", self.population_size, ">= 2")
        require(self.asha is not None or self.objectives is not None, where, "asha", None, "a mapping")
        if self.objectives is not None:
            require(len(self.objectives) >= 2, where, "objectives", len(self.objectives),
                    "two or more objectives; for one, use metric and mode")
            labels = [o.label for o in self.objectives]
            require(len(set(labels)) == len(labels), where, "objectives", labels, "each objective once")

    @property
    def directions(self) -> list[str]:
        """The study's directions, one per objective (one for a single metric)."""
        modes = [o.mode for o in self.objectives] if self.objectives else [self.mode]
        return ["maximize" if m == "max" else "minimize" for m in modes]

    @property
    def objective_names(self) -> list[str]:
        """The study's metric names: the objectives' labels, or the single metric."""
        return [o.label for o in self.objectives] if self.objectives else [self.metric]

    def _base(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The base as (experiment file without rows, row), both plain mappings, with ``base.train``/``resources``."""
        if self.base.experiment is not None:
            path = Path(self.source).parent / self.base.experiment
            try:
                row = load_experiment(path).row(self.base.row)  # validates the file and the row id
            except (ConfigError, FileNotFoundError) as err:
                raise ConfigError(f"{self.source}: base: {err}") from None
            header = read_yaml(path, "experiment file")
            row_map = next(r for r in header.pop("rows") if r["id"] == row.id)
        else:
            header = {"paper": {"arxiv": "2304.11954v5", "table": "none (search from a recipe)",
                                "source": f"search {self.source}"}, "recipe": self.base.recipe}
            row_map = {"id": "base", "model": {"name": self.base.model.name, "kwargs": self.base.model.kwargs}}
        row_map = deep_merge(row_map, {"train": self.base.train})
        header = deep_merge(header, {"resources": self.base.resources})
        return header, row_map

    def base_experiment(self) -> Experiment:
        """The experiment file the base row comes from, every row of it (the paper's table); a search from a
        recipe has none."""
        if self.base.experiment is None:
            raise ConfigError(f"{self.source}: the base is a recipe, not an experiment file")
        return load_experiment(Path(self.source).parent / self.base.experiment)

    def experiment(self) -> Experiment:
        """The experiment the search trials run: the base row under the budget, tracked as the search's name."""
        header, row = self._base()
        row = deep_merge(row, {"train": self.budget})
        return Experiment.from_dict({**header, "name": self.name, "rows": [row]}, where=f"{self.source}: base + budget")

    def tuned_experiment(self, rows: Mapping[str, Mapping[str, Any]], suffix: str, note: str) -> dict[str, Any]:
        """An experiment file (mapping) named ``<name>-<suffix>``, one row per entry of ``rows`` (row id -> sampled
        values): the base row plus those values, without the budget.

        Validated here, so what is written is what ``sfh reproduce`` accepts.
        """
        header, base = self._base()
        paper = base.get("paper", {})
        source = f"the paper's figure of the search's base ({self.source}); the hyperparameters come from the search"
        tuned = []
        for row_id, values in rows.items():
            chosen = nest(dict(values))
            row = deep_merge(base, {"id": row_id, "model": chosen.pop("model", {}), "train": chosen})
            row["paper"] = {"top1": paper.get("top1"), "source": source}
            tuned.append(row)
        mapping = {**header, "name": f"{self.name}-{suffix}", "description": note, "rows": tuned}
        Experiment.from_dict(mapping, where=f"{suffix} rows of {self.source}")
        return mapping


def _check_value(experiment: Experiment, key: str, value: Any, where: str) -> None:
    """``key = value`` on the base row must give a valid TrainConfig, and a model that builds."""
    row = experiment.rows[0]
    try:
        config = experiment.train_config(row, nest({key: value}))
        if key.startswith("model."):
            check_model(config.model, f"row {row.id}")
    except ConfigError as err:
        raise ConfigError(f"{where}: {value!r} is refused: {err}") from None


def load_search(path: str | Path) -> Search:
    """Read and validate a search file; any error names the file and the key."""
    return Search.from_dict(read_yaml(path, "search file"), where=str(path))
