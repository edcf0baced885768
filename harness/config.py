"""An experiment: one paper table as YAML, validated before anything starts.

A file names the table and its provenance, the recipe every row starts from, the verdict tolerance, the
resources upstream used, and one row per paper configuration with the paper's numbers. Each row resolves
to a ``TrainConfig`` (recipe, then the file's ``train``, then the row's ``model`` and ``train``), so a typo
in any row fails here, naming the file, the row and the key, before Ray starts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from spikingformer.config import (
    ConfigError,
    ModelConfig,
    Section,
    TrainConfig,
    deep_merge,
    load_yaml,
    require,
    section_from_dict,
)
from spikingformer.models import build_model


@dataclass
class PaperTable(Section):
    """Where the table's numbers come from."""

    arxiv: str
    table: str
    source: str


@dataclass
class PaperNumbers(Section):
    """One row's published figures (null where the paper gives none) and their evidence."""

    top1: float | None = None
    #: Parameters in millions, as the paper prints them.
    params_M: float | None = None
    #: The README/paper "FLOPs" column: synaptic operations (ACs), in G per image.
    sops_G: float | None = None
    energy_mJ: float | None = None
    #: The per-rank (per-GPU) batches upstream trained and evaluated with: where the model couples a sample to the
    #: rest of its batch (``SpikingTransformer.batch_coupling``), runs at other per-rank batches are not comparable.
    train_batch_per_rank: int | None = None
    eval_batch_per_rank: int | None = None
    source: str = ""

    def validate(self, where: str) -> None:
        require(self.top1 is None or 0.0 <= self.top1 <= 100.0, where, "top1", self.top1, "a percentage")
        for key in ("params_M", "sops_G", "energy_mJ", "train_batch_per_rank", "eval_batch_per_rank"):
            value = getattr(self, key)
            require(value is None or value > 0, where, key, value, "null or > 0")


@dataclass
class Tolerance(Section):
    """Verdict bands on |reproduced best top-1 - paper top-1|, in percentage points."""

    pass_pp: float = 0.5
    warn_pp: float = 1.5

    def validate(self, where: str) -> None:
        require(self.pass_pp >= 0, where, "pass_pp", self.pass_pp, ">= 0")
        require(self.warn_pp >= self.pass_pp, where, "warn_pp", self.warn_pp, f">= pass_pp ({self.pass_pp})")

    def verdict(self, delta_pp: float) -> str:
        if abs(delta_pp) <= self.pass_pp:
            return "PASS"
        return "WARN" if abs(delta_pp) <= self.warn_pp else "FAIL"


@dataclass
class Resources(Section):
    """DDP workers of one trial; ``use_gpu: auto`` takes GPUs when the Ray cluster has any."""

    num_workers: int = 1
    use_gpu: bool | Literal["auto"] = "auto"
    #: Logical Ray CPUs per worker (data loading threads run inside it).
    cpus_per_worker: float = 1.0

    def validate(self, where: str) -> None:
        require(self.num_workers >= 1, where, "num_workers", self.num_workers, ">= 1")
        require(self.cpus_per_worker > 0, where, "cpus_per_worker", self.cpus_per_worker, "> 0")


@dataclass
class Row(Section):
    """One paper configuration: a model, its overrides of the recipe and the paper's numbers."""

    id: str
    model: ModelConfig
    paper: PaperNumbers = field(default_factory=PaperNumbers)
    #: TrainConfig-shaped overrides of the recipe for this row only (e.g. ``schedule: {epochs: 400}``).
    train: dict[str, Any] = field(default_factory=dict)
    #: Overrides of the experiment's resources for this row only.
    resources: dict[str, Any] = field(default_factory=dict)
    #: A grid point's value on each axis (``harness.grid``); empty for a paper row.
    point: dict[str, Any] = field(default_factory=dict)
    #: The paper row a grid point equals (its numbers are in ``paper``), or null.
    reference: str | None = None
    #: This row's ``spikingformer.recipes`` recipe where it differs from the experiment's (SDT's ImageNet
    #: configs each have their own upstream conf), or null.
    recipe: str | None = None

    def validate(self, where: str) -> None:
        # '/' and '=' are allowed (grid points: 4-384/T=2); ',' separates ids in --rows.
        require(bool(self.id) and "," not in self.id and self.id == self.id.strip(), where, "id", self.id,
                 "a non-empty name without ',' or surrounding spaces")
        check_recipe(self.recipe, where)


@dataclass
class Experiment(Section):
    """One paper table: rows to train, how to judge them, and what they run on."""

    name: str
    paper: PaperTable
    rows: tuple[Row, ...]
    #: Name of a ``spikingformer.recipes`` recipe, or null to give the whole TrainConfig in ``train``.
    recipe: str | None = None
    description: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    tolerance: Tolerance = field(default_factory=Tolerance)
    resources: Resources = field(default_factory=Resources)
    #: Seeds per row (runtime.seed, +1, ...); ``--seeds`` overrides.
    seeds: int = 1

    # Where the experiment was read from (error messages); set by from_dict, never a YAML key.
    source = ""

    @classmethod
    def from_dict(cls, data: Any, where: str, *, skip_invalid: bool = False) -> Experiment:
        """Validate a parsed experiment file: every row's TrainConfig, model and resources included.

        A ``grid`` section is expanded into rows first (``harness.grid``); ``skip_invalid`` drops its
        impossible points instead of refusing the file.
        """
        grid = isinstance(data, dict) and "grid" in data
        if grid:
            from harness.grid import expand

            data = expand(data, where, skip_invalid=skip_invalid)  # checks every point as below
        try:
            experiment = section_from_dict(cls, data, where)
        except ConfigError as err:
            raise ConfigError(_by_row_id(str(err), data)) from None
        experiment.source = where
        for row in () if grid else experiment.rows:
            check_model(experiment.train_config(row).model, f"{where}: row {row.id}")
            experiment.resources_for(row)
        return experiment

    def validate(self, where: str) -> None:
        require(bool(self.name) and "/" not in self.name, where, "name", self.name, "a non-empty name without '/'")
        check_recipe(self.recipe, where)
        require(len(self.rows) >= 1, where, "rows", self.rows, "at least one row")
        require(self.seeds >= 1, where, "seeds", self.seeds, ">= 1")
        ids = [row.id for row in self.rows]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        require(not duplicates, where, "rows", duplicates, "unique row ids")

    def row(self, row_id: str) -> Row:
        for row in self.rows:
            if row.id == row_id:
                return row
        raise ConfigError(f"{self.source}: no row {row_id!r}; rows: {[r.id for r in self.rows]}")

    def train_mapping(self, row: Row) -> dict[str, Any]:
        """The row's TrainConfig as a plain mapping: recipe (the row's, else the experiment's) <- experiment train
        <- row model <- row train."""
        from spikingformer.recipes import load_recipe

        recipe = row.recipe or self.recipe
        base = load_recipe(recipe) if recipe else {}
        model: dict[str, Any] = {"name": row.model.name, "kwargs": row.model.kwargs}
        if row.model.finetune is not None:
            model["finetune"] = row.model.finetune
        row_part = deep_merge({"model": model}, row.train)
        return deep_merge(deep_merge(base, self.train), row_part)

    def train_config(self, row: Row, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Validated TrainConfig of ``row``, with ``overrides`` (smoke, CLI, search) laid on top."""
        mapping = deep_merge(self.train_mapping(row), overrides or {})
        return TrainConfig.from_dict(mapping, where=f"{self.source}: row {row.id}")

    def resources_for(self, row: Row) -> Resources:
        merged = deep_merge(vars(self.resources), row.resources)
        return section_from_dict(Resources, merged, f"{self.source}: row {row.id}: resources")


def _by_row_id(message: str, data: Any) -> str:
    """``FILE.rows[3].key`` -> ``FILE: row ID.key``: a row is known by its id, not by its position."""
    rows = data.get("rows") if isinstance(data, dict) else None

    def name(match: re.Match[str]) -> str:
        index = int(match[1])
        row = rows[index] if isinstance(rows, list) and index < len(rows) else None
        row_id = row.get("id") if isinstance(row, dict) else None
        return f": row {row_id}" if isinstance(row_id, str) and row_id else match[0]

    return re.sub(r"\.rows\[(\d+)\]", name, message)


def discover(folder: str | Path) -> list[Experiment]:
    """The experiment files in ``folder``; other YAML there (a standalone TrainConfig) is skipped, said so."""
    found = []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            found.append(load_experiment(path))
        except ConfigError as err:
            print(f"skipping {path}: not an experiment file ({err})", file=sys.stderr)
    return found


def tracked_name(experiment: Experiment, *, smoke: bool = False, epochs: int | None = None) -> str:
    """MLflow experiment and Tune folder name: runs that change the recipe never mix with the paper's protocol."""
    return experiment.name + ("-smoke" if smoke else "") + (f"-e{epochs}" if epochs is not None else "")


def check_model(model: ModelConfig, where: str) -> None:
    """Build the model on the meta device (no memory): kwargs the constructor refuses fail here, not on a worker."""
    with torch.device("meta"):
        try:
            build_model(model.name, **model.kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}.model: {model.name} with kwargs {model.kwargs}: {err}") from err


def check_recipe(name: str | None, where: str) -> None:
    """A recipe name must be one ``spikingformer.recipes`` knows (null: the file gives the whole TrainConfig)."""
    from spikingformer.recipes import RECIPES

    if name is not None and name not in RECIPES:
        raise ConfigError(f"{where}: recipe: unknown recipe {name!r}; known: {', '.join(RECIPES)}")


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; a missing file or a syntax error names the file (and the parser's line and column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return load_yaml(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_experiment(path: str | Path, *, skip_invalid: bool = False) -> Experiment:
    """Read and validate an experiment file; any error names the file, the row and the key.

    A grid file comes back expanded, one row per point (``skip_invalid``: without its impossible points).
    """
    return Experiment.from_dict(read_yaml(path, "experiment file"), where=str(path), skip_invalid=skip_invalid)


#: ``--smoke``: any row becomes a seconds-long CPU run on synthetic data of the row's input shape.
SMOKE_OVERRIDES: dict[str, Any] = {
    "data": {
        "dataset": "synthetic", "root": None, "batch_size": 2, "eval_batch_size": 2, "num_workers": 0,
        "train_size": 2, "eval_size": 2, "max_train_batches": 1, "max_eval_batches": 1,
    },
    "schedule": {"epochs": 1, "warmup_epochs": 0, "cooldown_epochs": 0},
    "runtime": {"device": "cpu", "amp": "none"},
}
#: ``--smoke`` resources: one CPU worker, whatever the table asks for.
SMOKE_RESOURCES = Resources(num_workers=1, use_gpu=False, cpus_per_worker=1.0)


def run_overrides(
    config: TrainConfig, *, smoke: bool = False, epochs: int | None = None, data_root: str | None = None
) -> dict[str, Any]:
    """The command line's changes to a row's TrainConfig, as a mapping to lay over it.

    ``data_root`` holds one folder per dataset (``DIR/cifar10``, ``DIR/dvs128-gesture``, ...); ``epochs``
    sets the total (no cooldown, warmup capped to fit).
    """
    overrides: dict[str, Any] = {}
    if data_root and config.data.dataset not in ("digits", "synthetic"):
        overrides = deep_merge(overrides, {"data": {"root": str(Path(data_root).resolve() / config.data.dataset)}})
    if smoke:
        overrides = deep_merge(overrides, SMOKE_OVERRIDES)
    if epochs is not None:
        warmup = min(config.schedule.warmup_epochs, epochs)
        schedule = {"epochs": epochs, "cooldown_epochs": 0, "warmup_epochs": warmup}
        overrides = deep_merge(overrides, {"schedule": schedule})
    return overrides
