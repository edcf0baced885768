"""Grids, a pre-pass over the raw YAML: a ``grid:`` section turns base rows into a study over axes (T, depth, width,
dataset, ...).

The cartesian product of the axes, applied to base rows of a paper table, becomes ordinary experiment rows
before anything else sees the file, so planning, tracking, resume, ``--rows``, ``--smoke``, ``sfh plan``,
tables and reports treat a point as any row. A point's id is its base row's id plus one ``/<axis>=<value>``
per axis (``4-384/T=2``). A point whose resolved TrainConfig equals a paper row of its table (model
defaults filled in, so ``4-384`` with ``depth: 2`` is the ``2-384`` row) carries that row's numbers and gets
a verdict; the others (and those equal to a row without a published top-1) have no reference.

::

    name: cifar10-T
    grid:
      table: ../cifar10.yaml          # the paper table: recipe, rows and numbers (none: this file's own rows)
      base: 4-384                     # base row(s) (default: every row)
      axes:
        model.kwargs.T: [1, 2, 4, 6, 8]

Keys joined by ``,`` take each value together (``model.kwargs.T,data.frames: [10, 16]``: a DVS model's T
and its event frames). The ``dataset`` axis picks among several tables (``table: {cifar10: ../cifar10.yaml,
cifar100: ...}``): each value trains its base row with that table's recipe and compares it with that
table's numbers. The grid file's own ``train``, ``resources``, ``tolerance``, ``seeds``, ``paper`` and
``description`` lie over the table's.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.experiment.resolve import check_model, config_hash, nest, read_yaml, train_mapping
from harness.formatting import format_value
from spikingformer._validation import ConfigError, Section, deep_merge, require, section_from_dict
from spikingformer.config import TrainConfig
from spikingformer.models import MODEL_CONFIGS

#: The axis that picks the table (and so the dataset and its recipe) of a point.
DATASET = "dataset"
#: The verdict of a point that equals no paper row.
NO_REFERENCE = "no reference"
_SECTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))
#: Keys of a grid file that lie over its table's (``rows`` come from the table).
_OVERLAY = ("paper", "description", "tolerance", "resources", "seeds")


@dataclass
class Grid(Section):
    """The ``grid:`` section: axes (dotted TrainConfig keys, or ``dataset``) over base rows of a table."""

    axes: dict[str, Any]
    #: Base row id(s); null: every row of the table.
    base: str | tuple[str, ...] | None = None
    #: The paper table (experiment file, relative to this file), one per ``dataset`` value, or null for this
    #: file's own rows.
    table: str | dict[str, str] | None = None

    def validate(self, where: str) -> None:
        require(len(self.axes) >= 1, where, "axes", self.axes, "at least one axis")
        for key, values in self.axes.items():
            require(key == DATASET or all(k.split(".")[0] in _SECTIONS for k in key.split(",")), where, "axes", key,
                     f"'{DATASET}', a dotted TrainConfig key under one of {list(_SECTIONS)} (e.g. model.kwargs.T), "
                     "or several joined by ',' that take each value together (model.kwargs.T,data.frames)")
            require(isinstance(values, list) and len(values) >= 1, where, f"axes.{key}", values,
                     "a non-empty list of values")
            require(len({repr(v) for v in values}) == len(values), where, f"axes.{key}", values, "distinct values")
        if DATASET in self.axes:
            require(isinstance(self.table, dict) and set(self.axes[DATASET]) <= set(self.table), where, "table",
                     self.table, f"a mapping naming an experiment file for each dataset of {self.axes[DATASET]}")
        else:
            require(not isinstance(self.table, dict), where, "table", self.table,
                     f"one experiment file (a mapping needs the '{DATASET}' axis)")

    def bases(self, default: list[str]) -> list[str]:
        if self.base is None:
            return default
        return [self.base] if isinstance(self.base, str) else list(self.base)


def label(key: str, keys: list[str]) -> str:
    """The short name of an axis in ids and table columns: the last part of its (first) key, unless two axes
    share it."""
    def short(k: str) -> str:
        return k.split(",")[0].split(".")[-1]

    return short(key) if [short(k) for k in keys].count(short(key)) == 1 else key.split(",")[0]


def identity(config: TrainConfig) -> str:
    """What a config trains, with the model as its family and full constructor arguments: two registered names
    that build the same network (``cifar_4_384`` with depth 2, ``cifar_2_384``) are equal."""
    family, defaults = MODEL_CONFIGS[config.model.name]
    train = config.to_dict()
    train["model"] = {"family": family.__name__, "kwargs": {**defaults, **config.model.kwargs}}
    return config_hash(train)


def axes(rows: Any) -> list[str]:
    """The axis names of a grid's points (rows with a ``point``), in their order; empty for a plain table."""
    return list(dict.fromkeys(key for row in rows for key in row.point))


@dataclass(frozen=True)
class _Table:
    """A paper table as its raw mapping (the schema validates what the expansion makes of it)."""

    source: str
    data: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        rows = self.data.get("rows")
        require(isinstance(rows, list) and all(isinstance(r, dict) and "id" in r for r in rows), self.source,
                "rows", rows, "a list of rows, each with an id")
        return rows

    def row(self, row_id: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["id"] == row_id)

    def train_mapping(self, row: dict[str, Any]) -> dict[str, Any]:
        return train_mapping(row.get("recipe") or self.data.get("recipe"), self.data.get("train") or {},
                             row.get("model") or {}, row.get("train") or {})

    def resources(self, row: dict[str, Any]) -> dict[str, Any]:
        return deep_merge(self.data.get("resources") or {}, row.get("resources") or {})


def _tables(grid: Grid, data: dict[str, Any], where: str) -> dict[Any, _Table]:
    """The raw table of each ``dataset`` value (key None without that axis)."""
    if grid.table is None:
        require("rows" in data, where, "grid.table", None, "an experiment file, or rows in this file")
        return {None: _Table(where, {k: v for k, v in data.items() if k != "grid"})}
    extra = sorted(set(data) - {"name", "grid", "train", *_OVERLAY})
    require(not extra, where, "grid.table", grid.table, f"no {extra} beside it: the table gives those")
    paths = grid.table if isinstance(grid.table, dict) else {None: grid.table}
    tables = {}
    for key, path in paths.items():
        path = Path(where).parent / path
        mapping = read_yaml(path, f"{where}: grid.table")
        require(isinstance(mapping, dict) and "grid" not in mapping, where, "grid.table", str(path),
                 "a paper table (an experiment file without a grid)")
        tables[key] = _Table(str(path), mapping)
    return tables


def _row_mapping(
    table: _Table, base_id: str, values: dict[str, Any], train: dict[str, Any], resources: dict[str, Any],
    references: dict[str, tuple[str, Any]], keys: list[str], where: str,
) -> dict[str, Any]:
    """One point as a self-contained row (its whole TrainConfig in ``train``); raises ConfigError if impossible."""
    row = table.row(base_id)
    point = {label(k, keys): v for k, v in values.items()}
    point_id = base_id + "".join(f"/{name}={format_value(v)}" for name, v in point.items())
    settings = nest({part: v for k, v in values.items() if k != DATASET for part in k.split(",")})
    mapping = deep_merge(deep_merge(table.train_mapping(row), train), settings)
    here = f"{where}: row {point_id}"
    config = TrainConfig.from_dict(mapping, where=here)
    check_model(config.model, here)
    reference, paper = references.get(identity(config), (None, {"source": NO_REFERENCE}))
    return {
        "id": point_id, "model": mapping.pop("model"), "train": mapping,
        "resources": deep_merge(table.resources(row), resources), "paper": paper, "point": point,
        "reference": reference,
    }


def _references(table: _Table) -> dict[str, tuple[str, Any]]:
    """Every row of the table with a published top-1 (not only the bases), by what it trains."""
    out = {}
    for row in table.rows:
        paper = row.get("paper") or {}
        if paper.get("top1") is not None:
            config = TrainConfig.from_dict(table.train_mapping(row), where=f"{table.source}: row {row['id']}")
            out[identity(config)] = (row["id"], paper)
    return out


def expand(data: dict[str, Any], where: str, *, skip_invalid: bool = False) -> dict[str, Any]:
    """An experiment mapping with a ``grid`` -> the same experiment with one self-contained row per point.

    Every point's TrainConfig and model are checked here; impossible ones (a width the head count does not
    divide, ...) are all named in one error, or, with ``skip_invalid``, dropped and named on stderr. The result
    is raw YAML again: the schema validates it like any experiment file.
    """
    grid = section_from_dict(Grid, data["grid"], f"{where}: grid")
    tables = _tables(grid, data, where)
    first = next(iter(tables.values()))
    keys = list(grid.axes)
    own = grid.table is None  # the file's train and resources are already its rows'
    train = {} if own else data.get("train", {})
    resources = {} if own else data.get("resources", {})
    references = {key: _references(table) for key, table in tables.items()}
    common = [r["id"] for r in first.rows if all(any(o["id"] == r["id"] for o in t.rows) for t in tables.values())]
    bases = grid.bases(common)
    for table in tables.values():
        missing = [b for b in bases if all(r["id"] != b for r in table.rows)]
        require(not missing, f"{where}: grid", "base", missing,
                 f"row ids of {table.source}: {[r['id'] for r in table.rows]}")
    rows, invalid = [], []
    for base_id in bases:
        for combo in itertools.product(*grid.axes.values()):
            values = dict(zip(keys, combo, strict=True))
            key = values.get(DATASET)
            try:
                rows.append(_row_mapping(tables[key], base_id, values, train, resources, references[key], keys, where))
            except ConfigError as err:
                invalid.append(str(err))
    if invalid and not skip_invalid:
        raise ConfigError(f"{where}: {len(invalid)} impossible grid point(s) (--skip-invalid drops them):\n  "
                          + "\n  ".join(invalid))
    for err in invalid:
        print(f"skipping an impossible grid point: {err}", file=sys.stderr)
    require(bool(rows), where, "grid", data["grid"], "at least one possible point")
    header = {k: v for k, v in first.data.items() if k in _OVERLAY}
    header.update({k: v for k, v in data.items() if k in (*_OVERLAY, "name")})
    header["resources"] = deep_merge(first.data.get("resources") or {}, resources)
    return {**header, "recipe": None, "rows": rows}
