"""Trial specs, made on the driver before Ray starts: one TrialSpec per (row, seed), checked against MLflow.

:func:`trial_specs` turns a validated experiment and the command line into specs (plain data that travels in
Tune's param_space and survives restores), :func:`check_tracked` refuses runs tracked under another
configuration, :func:`bind` settles ``use_gpu: auto`` once the cluster is known and :func:`trial_resources`
says what a trial will occupy in it. Nothing here runs inside Ray: that is :mod:`harness.run.trial`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mlflow.entities import Run

from harness import tracking
from harness.experiment import SMOKE_RESOURCES, Experiment, Resources, run_overrides
from harness.experiment.resolve import config_hash
from harness.reference.guard import GuardSpec
from spikingformer._validation import ConfigError
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import check_data

#: The Tune function only waits on its TorchTrainer; Ray refuses a zero-CPU bundle.
TRIAL_DRIVER_CPU = 0.01


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs: ``config`` as it was validated here, on the driver, and known by its hash.

    It travels in Tune's param_space as plain data (:meth:`to_mapping`: Tune shows it, keeps it in its state and
    hands it back on restore) and becomes a spec again in the trial (:meth:`from_mapping`), which checks that
    the config arrived as it left.
    """

    experiment: str
    row: str
    seed: int
    config: TrainConfig
    #: ``resolve.config_hash`` of ``config``, made once with it: a run's identity in MLflow and Ray Train.
    config_hash: str
    resources: dict[str, Any]
    tracking_uri: str
    #: Absolute folder (or URI) holding the Train runs of this experiment.
    train_storage: str
    energy_batches: int
    max_failures: int
    tags: dict[str, str] = field(default_factory=dict)
    #: The row's convergence guard (``harness.reference.guard.GuardSpec.to_mapping``), None without a reference
    #: curve. Not part of the config or its hash: it watches training, and changes it only by stopping it.
    guard: dict[str, Any] | None = None

    @property
    def run_key(self) -> str:
        return tracking.run_key(self.experiment, self.row, self.seed)

    @property
    def train(self) -> dict[str, Any]:
        """The config as a plain mapping (MLflow params, config.yaml, comparisons with tracked runs)."""
        return self.config.to_dict()

    @property
    def total_epochs(self) -> int:
        return self.config.schedule.total_epochs

    def with_config(self, config: TrainConfig) -> TrialSpec:
        """This trial training another (already validated) config: a search's sampled values."""
        return replace(self, config=config, config_hash=config_hash(config.to_dict()))

    def to_mapping(self) -> dict[str, Any]:
        """Plain data for Tune's param_space: every field, the config as its mapping (``train``)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "config"}, "train": self.train}

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> TrialSpec:
        """The spec :meth:`to_mapping` made, its config rebuilt; a config changed on the way is refused."""
        data = dict(data)
        train = data.pop("train")
        spec = cls(config=TrainConfig.from_dict(train, where=f"trial {data['row']}"), **data)
        if config_hash(train) != spec.config_hash:
            raise ValueError(f"trial {spec.run_key}: its config changed between the driver and the trial "
                             f"(hash {config_hash(train)}, planned {spec.config_hash})")
        return spec


class ConfigChanged(ValueError):
    """A tracked run of a (row, seed) was trained under another TrainConfig than the row now resolves to."""


def trial_specs(
    experiment: Experiment,
    *,
    name: str,
    rows: list[str] | None,
    seeds: int | None,
    tracking_uri: str,
    train_storage: str,
    smoke: bool = False,
    epochs: int | None = None,
    data_root: str | None = None,
    energy_batches: int = 8,
    max_failures: int = 2,
) -> list[TrialSpec]:
    """One spec per (row, seed): the row's TrainConfig with the command line's changes, validated once, here.

    ``name`` is the tracked name (MLflow experiment, run keys), the file's name unless the recipe changed.

    ``use_gpu`` may still be "auto" here: :func:`bind` settles it once the cluster is known. Two specs of
    one run key would race for one MLflow run and one Train folder: refused.
    """
    specs = []
    tags = {tracking.PAPER_TABLE: experiment.paper.table, **tracking.provenance_tags(),
            **tracking.source_tags(experiment.source)}
    for row in [experiment.row(r) for r in rows] if rows else experiment.rows:
        overrides = run_overrides(experiment.config(row), smoke=smoke, epochs=epochs, data_root=data_root)
        config = experiment.train_config(row, overrides) if overrides else experiment.config(row)
        resources = SMOKE_RESOURCES if smoke else experiment.resources_for(row)
        curve = experiment.reference_for(row)
        rules = experiment.guard_for(row)
        guard = GuardSpec(curve, rules.stop_when_behind, rules.patience).to_mapping() if curve is not None else None
        for k in range(experiment.seeds if seeds is None else seeds):
            seed = config.runtime.seed + k
            seeded = replace(config, runtime=replace(config.runtime, seed=seed))
            specs.append(
                TrialSpec(
                    experiment=name,
                    row=row.id,
                    seed=seed,
                    config=seeded,
                    config_hash=config_hash(seeded.to_dict()),
                    resources=asdict(resources),
                    tracking_uri=tracking_uri,
                    train_storage=train_storage,
                    energy_batches=1 if smoke else energy_batches,
                    max_failures=max_failures,
                    tags=tags,
                    guard=guard,
                )
            )
    keys = [spec.run_key for spec in specs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ConfigError(f"{experiment.source}: run key(s) {twice} planned twice: give each row once")
    return specs


def check_tracked(store: tracking.Tracking, specs: list[TrialSpec], source: str) -> dict[str, Run]:
    """The tracked run of each spec that has one, by run key; refuses runs made under another TrainConfig.

    A run is found again by its key alone, so a row edited since would otherwise be skipped as FINISHED, or
    resume a run of the old configuration. A run without ``sfh.config_hash`` (tracked before it existed) is
    taken as it is. ``source`` (the experiment file) is named in the refusal.
    """
    found: dict[str, Run] = {}
    refused = []
    experiment_id = store.find_experiment(specs[0].experiment) if specs else None
    for spec in specs if experiment_id is not None else []:
        run = store.find_run(experiment_id, spec.run_key)
        if run is None:
            continue
        found[spec.run_key] = run
        tracked = run.data.tags.get(tracking.CONFIG_HASH)
        if tracked is not None and tracked != spec.config_hash:
            changes = tracking.config_changes(run.data.params, spec.train) or ["(params not comparable)"]
            more = f"; and {len(changes) - 5} more" if len(changes) > 5 else ""
            refused.append(f"  row {spec.row} seed {spec.seed}: MLflow run {run.info.run_id} ({run.info.status}), "
                           f"config {tracked} -> {spec.config_hash}: {'; '.join(changes[:5])}{more}")
    if refused:
        raise ConfigChanged(
            f"{source}: {len(refused)} (row, seed) run(s) of {specs[0].experiment!r} in {store.uri} were trained under "
            "another configuration than the file gives now:\n" + "\n".join(refused) + "\n"
            f"A run is found again by its key (experiment/row/seed) and would be skipped or resumed under the old "
            f"configuration. To train the edited rows, give the experiment a new `name` in {source}, or delete "
            f"those runs (`mlflow runs delete --run-id ID` with MLFLOW_TRACKING_URI={store.uri}) and run again."
        )
    return found


def path_name(text: str) -> str:
    """``text`` as one folder name (Tune trial folders, Train run names): grid point ids hold '/' and '='."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def check_data_folders(specs: list[TrialSpec]) -> None:
    """Every row's data folder checked on this machine before Ray starts (each folder once); all problems are
    named together, each with the rows that use the folder."""
    rows: dict[tuple[str, str | None], list[str]] = {}
    configs = {}
    for spec in specs:
        config = spec.config
        key = (config.data.dataset, config.data.root)
        configs.setdefault(key, config)
        if spec.row not in rows.setdefault(key, []):
            rows[key].append(spec.row)
    problems = []
    for key, config in configs.items():
        try:
            check_data(config)
        except (FileNotFoundError, ValueError) as err:
            problems.append(f"  row(s) {', '.join(rows[key])}: {err}")
    if problems:
        raise FileNotFoundError(
            "data folder problem(s), found before starting Ray:\n" + "\n".join(problems) + "\n"
            "Give the folder holding one subfolder per dataset with --data-root (or data.root in the file); "
            "if the data lives only on the worker nodes, pass --skip-data-check."
        )


def sampled_run_key(run_key: str, trial_id: str) -> str:
    """The run key of one sampled configuration of a search: the row's key plus Tune's trial id."""
    return f"{run_key}/{trial_id}"


def bind(spec: TrialSpec, *, gpus_available: bool) -> TrialSpec:
    """Settle ``use_gpu: auto`` against the cluster the trial will run on."""
    use_gpu = spec.resources["use_gpu"]
    return replace(spec, resources={**spec.resources, "use_gpu": gpus_available if use_gpu == "auto" else use_gpu})


def trial_resources(spec: TrialSpec) -> dict[str, float]:
    """What one trial occupies in the cluster while it trains (driver + workers)."""
    res = Resources(**spec.resources)
    need = {"CPU": TRIAL_DRIVER_CPU + res.num_workers * res.cpus_per_worker}
    if res.use_gpu:
        need["GPU"] = float(res.num_workers)
    return need
