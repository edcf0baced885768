"""A search file: which row to tune, over which TrainConfig keys, on what budget; validated before Ray starts.

A search names a ``base`` (an experiment file and one of its rows, or a recipe and a model), a ``budget``
(TrainConfig overrides that hold only while searching: fewer epochs, a data subset) and a ``space`` of dotted
TrainConfig keys (``optim.lr``, ``augment.mixup_alpha``, ``model.kwargs.depth``, ...), each with one
distribution. Both ends of every range and every choice are checked against the base row's TrainConfig (and
model keys against the model's constructor, built on the meta device), so an unknown key or an impossible
value fails here naming the file and the key. The best sampled values come back as an experiment file of
one row: the base row plus those values, without the budget, which ``sfh reproduce`` trains like a paper row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from harness.experiment import Experiment, load_experiment
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
    #: ``gap_to_reference``: top-1 minus the base row's reference curve at the same fraction of the schedule.
    metric: Literal["top1", "top5", "eval_loss", "gap_to_reference"] = "top1"
    mode: Literal["max", "min"] = "max"
    #: Trials per invocation (``--trials`` overrides); the study keeps the trials of every invocation.
    num_samples: int = 8
    #: Trials at once (null: as many as the cluster fits).
    max_concurrent: int | None = 1
    #: Random trials (over the whole study) before TPE models the results.
    startup_trials: int = 5
    #: TPE seed (offset by the study's trial count, so a second invocation does not replay the first).
    seed: int | None = None
    asha: Asha = field(default_factory=Asha)

    # Where the search was read from (error messages, the base's relative path); never a YAML key.
    source = ""

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Search:
        """Validate a parsed search file, its base row and every value of its space."""
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            space = {k: section_from_dict(Dimension, v, f"{where}: space.{k}") for k, v in data["space"].items()}
            data = {**data, "space": space}
        search = section_from_dict(cls, data, where)
        search.source = where
        experiment = search.experiment()
        require(search.metric != "gap_to_reference" or experiment.rows[0].reference_curve is not None, where,
                "metric", search.metric, "a base row with a reference_curve")
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

    def experiment(self) -> Experiment:
        """The experiment the search trials run: the base row under the budget, tracked as the search's name."""
        header, row = self._base()
        row = deep_merge(row, {"train": self.budget})
        return Experiment.from_dict({**header, "name": self.name, "rows": [row]}, where=f"{self.source}: base + budget")

    def best_experiment(self, values: dict[str, Any], row_id: str, note: str) -> dict[str, Any]:
        """An experiment file (mapping) of one row: the base row plus the sampled ``values``, without the budget.

        Validated here, so what is written is what ``sfh reproduce`` accepts.
        """
        header, row = self._base()
        chosen = nest(values)
        paper = row.get("paper", {})
        row = deep_merge(row, {"id": row_id, "model": chosen.pop("model", {}), "train": chosen})
        source = f"the paper's figure of the search's base ({self.source}); the hyperparameters come from the search"
        row["paper"] = {"top1": paper.get("top1"), "source": source}
        mapping = {**header, "name": f"{self.name}-best", "description": note, "rows": [row]}
        Experiment.from_dict(mapping, where=f"best row of {self.source}")
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
