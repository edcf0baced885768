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

from harness.experiment.grid import expand
from harness.experiment.resolve import check_model, check_recipe, read_yaml, train_mapping
from harness.reference.curves import ReferenceCurve, load_curve
from spikingformer._validation import (
    ConfigError,
    Problems,
    Section,
    deep_merge,
    require,
    require_folder_name,
    section_from_dict,
)
from spikingformer.config import ModelConfig, TrainConfig


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
class Guard(Section):
    """The convergence guard of a row with a reference curve (``harness.reference.guard``): every evaluated epoch
    is compared with the curve; ``stop_when_behind`` stops a trial that stays below its band ``patience``
    evaluated epochs in a row."""

    stop_when_behind: bool = False
    patience: int = 3

    def validate(self, where: str) -> None:
        require(self.patience >= 1, where, "patience", self.patience, ">= 1")


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
    #: A grid point's value on each axis (``harness.experiment.grid``); empty for a paper row.
    point: dict[str, Any] = field(default_factory=dict)
    #: The paper row a grid point equals (its numbers are in ``paper``), or null.
    reference: str | None = None
    #: This row's ``spikingformer.recipes`` recipe where it differs from the experiment's (SDT's ImageNet
    #: configs each have their own upstream conf), or null.
    recipe: str | None = None
    #: The authors' training curve this row reproduces: a name in ``experiments/reference/`` or a JSON file
    #: relative to the experiment file (``harness.reference.curves``); null where no log was published.
    reference_curve: str | None = None
    #: Overrides of the experiment's ``guard`` for this row only.
    guard: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        # '/' and '=' are allowed (grid points: 4-384/T=2); ',' separates ids in --rows.
        require("," not in self.id, where, "id", self.id, "a name without ','")
        require_folder_name(self.id, where, "id", segments=True)
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
    guard: Guard = field(default_factory=Guard)
    #: Seeds per row (runtime.seed, +1, ...); ``--seeds`` overrides.
    seeds: int = 1

    # Where the experiment was read from (error messages); set by from_dict, never a YAML key.
    source = ""

    def __post_init__(self) -> None:
        #: Each row's TrainConfig as validated by from_dict (``config``), by row id.
        self._configs: dict[str, TrainConfig] = {}
        self._curves: dict[str, ReferenceCurve] = {}

    @classmethod
    def from_dict(cls, data: Any, where: str, *, skip_invalid: bool = False) -> Experiment:
        """Validate a parsed experiment file: every row's TrainConfig, model and resources included.

        A ``grid`` section is expanded into rows first (the ``grid`` pre-pass); ``skip_invalid`` drops its
        impossible points instead of refusing the file.
        """
        grid = isinstance(data, dict) and "grid" in data
        if grid:
            data = expand(data, where, skip_invalid=skip_invalid)  # the pre-pass checks every point as below
        try:
            experiment = section_from_dict(cls, data, where)
        except ConfigError as err:
            raise ConfigError(*[_by_row_id(problem, data) for problem in err.problems]) from None
        experiment.source = where
        problems = Problems()  # every row checked: all of a file's mistakes in one answer
        for row in experiment.rows:
            config = problems.check(experiment.train_config, row)
            if config is not None and not grid:  # the pre-pass built every point's model already
                problems.check(check_model, config.model, f"{where}: row {row.id}")
            problems.check(experiment.resources_for, row)
            problems.check(experiment.reference_for, row)
            problems.check(experiment.guard_for, row)
            experiment._configs[row.id] = config
        problems.raise_any()
        return experiment

    def validate(self, where: str) -> None:
        require_folder_name(self.name, where, "name")
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
        return train_mapping(row.recipe or self.recipe, self.train, vars(row.model), row.train)

    def config(self, row: Row) -> TrainConfig:
        """The row's TrainConfig, validated once when the file was read."""
        if row.id not in self._configs:
            self._configs[row.id] = self.train_config(row)
        return self._configs[row.id]

    def train_config(self, row: Row, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Validated TrainConfig of ``row``, with ``overrides`` (smoke, CLI, search) laid on top, accumulating
        gradients where the row's workers are fewer than the paper's GPUs (:func:`accumulation_steps`)."""
        mapping = deep_merge(self.train_mapping(row), overrides or {})
        where = f"{self.source}: row {row.id}"
        config = TrainConfig.from_dict(mapping, where=where)
        steps = accumulation_steps(config, self.resources_for(row).num_workers, where)
        if steps == config.optim.grad_accum_steps:
            return config
        return TrainConfig.from_dict(deep_merge(mapping, {"optim": {"grad_accum_steps": steps}}), where=where)

    def accumulation_note(self, row: Row) -> str | None:
        """How the row reaches the paper's global batch when it accumulates gradients to do so, else None."""
        config, workers = self.config(row), self.resources_for(row).num_workers
        if config.data.recipe_global_batch is None or config.optim.grad_accum_steps == 1:
            return None
        return (f"{workers} worker(s) x {config.data.batch_size} per rank x {config.optim.grad_accum_steps} "
                f"accumulated = {config.data.recipe_global_batch}, the paper's global batch")

    def guard_for(self, row: Row) -> Guard:
        merged = deep_merge(vars(self.guard), row.guard)
        guard = section_from_dict(Guard, merged, f"{self.source}: row {row.id}: guard")
        require(not row.guard.get("stop_when_behind") or row.reference_curve is not None,
                f"{self.source}: row {row.id}", "guard.stop_when_behind", True, "only with a reference_curve")
        return guard

    def reference_for(self, row: Row) -> ReferenceCurve | None:
        """The row's reference curve, read (and checked) from its file; None where the row names none."""
        if row.reference_curve is None:
            return None
        if row.id not in self._curves:
            try:
                self._curves[row.id] = load_curve(row.reference_curve, Path(self.source).parent)
            except (OSError, ValueError) as err:
                raise ConfigError(f"{self.source}: row {row.id}.reference_curve: {err}") from None
        return self._curves[row.id]

    def resources_for(self, row: Row) -> Resources:
        merged = deep_merge(vars(self.resources), row.resources)
        return section_from_dict(Resources, merged, f"{self.source}: row {row.id}: resources")


def accumulation_steps(config: TrainConfig, workers: int, where: str) -> int:
    """Gradient accumulation steps that keep the paper's global batch (``data.recipe_global_batch``) on ``workers``
    ranks; a row whose per-rank batch and workers cannot reach it exactly is refused rather than trained at another
    effective batch. No recipe global batch: the row's own setting."""
    target, steps = config.data.recipe_global_batch, config.optim.grad_accum_steps
    per_update = config.data.batch_size * workers
    if target is None or per_update * steps == target:
        return steps
    if target % per_update:
        raise ConfigError(
            f"{where}: {workers} worker(s) x data.batch_size {config.data.batch_size} cannot reach the paper's global "
            f"batch {target} (data.recipe_global_batch) by accumulating gradients: choose workers and batch_size whose "
            f"product divides {target}, or set data.recipe_global_batch to train at another global batch on purpose"
        )
    return target // per_update


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


def load_experiment(path: str | Path, *, skip_invalid: bool = False) -> Experiment:
    """Read and validate an experiment file; any error names the file, the row and the key.

    A grid file comes back expanded, one row per point (``skip_invalid``: without its impossible points).
    """
    return Experiment.from_dict(read_yaml(path, "experiment file"), where=str(path), skip_invalid=skip_invalid)
