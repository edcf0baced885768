"""The experiment file side: what a YAML file may hold and what each row trains, all checked before Ray starts.

``schema`` (paper tables: rows, paper numbers, tolerance, resources), ``grid`` (the raw-YAML pre-pass that turns
a ``grid:`` section into rows), ``search_space`` (search files), ``overrides`` (what the command line changes),
``resolve`` (the lower piece they share: YAML reading, recipe resolution, the model check, a row's hash).
"""

from harness.experiment.overrides import SMOKE_RESOURCES, run_overrides, tracked_name
from harness.experiment.schema import (
    Experiment,
    Guard,
    PaperNumbers,
    PaperTable,
    Resources,
    Row,
    Tolerance,
    discover,
    load_experiment,
)

__all__ = [
    "SMOKE_RESOURCES",
    "Experiment",
    "Guard",
    "PaperNumbers",
    "PaperTable",
    "Resources",
    "Row",
    "Tolerance",
    "discover",
    "load_experiment",
    "run_overrides",
    "tracked_name",
]
