"""What a run looks like in MLflow: experiment kind and description, datasets, source and user, no noise.

Against a real sqlite store, through the same ``harness.tracking`` calls a trial makes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import tracking
from harness.experiment.resolve import flatten
from spikingformer.config import TrainConfig
from spikingformer.evaluate import energy_figures

DIGITS_INFO = {
    "train": {"dataset": "digits", "split": "train", "fingerprint": "ab12", "root": "scikit-learn", "size": 1437},
    "eval": {"dataset": "digits", "split": "eval", "fingerprint": "ab12", "root": "scikit-learn", "size": 360},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tracking.Tracking:
    return tracking.Tracking(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def test_experiment_opens_as_model_training_with_its_description(store: tracking.Tracking) -> None:
    experiment_id = store.describe("kind", "Spikingformer vs Spikformer on digits")
    tags = store.client.get_experiment(experiment_id).tags
    assert tags[tracking.EXPERIMENT_KIND] == tracking.MODEL_TRAINING
    assert tags[tracking.DESCRIPTION] == "Spikingformer vs Spikformer on digits"
    view = json.loads(tags[f"mlflow.sharedViewState.{tracking.RESULTS_VIEW}"])
    assert view["orderByKey"] == "metrics.`best_top1`" and "metrics.`best_top1`" in view["selectedColumns"]
    # an experiment a trial creates first (no description known there) is still model training
    other = store.experiment_id("kind-by-trial")
    assert store.client.get_experiment(other).tags[tracking.EXPERIMENT_KIND] == tracking.MODEL_TRAINING


def test_trial_run_has_source_user_datasets_and_no_none_params(store: tracking.Tracking) -> None:
    train = TrainConfig.from_dict({"model": {"name": "spikingformer_cifar_2_384"}}).to_dict()
    params = flatten(train)
    assert "None" in params.values()  # the config has unset options: they must not become params
    tags = {**tracking.provenance_tags(), **tracking.source_tags("experiments/demo.yaml")}
    run = store.open_trial_run("inputs", "inputs/row/seed0", run_name="row seed0", tags=tags, params=params)
    run_id = run.info.run_id
    store.log_datasets(run_id, DIGITS_INFO)
    store.log_datasets(run_id, DIGITS_INFO)  # a resumed trial logs them again: still one input per split
    run = store.client.get_run(run_id)
    assert "None" not in run.data.params.values() and run.data.params["model.name"] == "spikingformer_cifar_2_384"
    assert run.data.tags[tracking.SOURCE_NAME] == "experiments/demo.yaml" and run.data.tags[tracking.USER]
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-eval"}
    train_input = inputs["digits-train"]
    assert json.loads(train_input.dataset.source) == {"uri": "scikit-learn load_digits"}
    assert len(train_input.dataset.digest) == 16 and json.loads(train_input.dataset.profile) == {"num_rows": 1437}
    assert {t.key: t.value for t in train_input.tags} == {tracking.DATASET_CONTEXT: "training"}
    assert inputs["digits-eval"].dataset.digest != train_input.dataset.digest


def test_a_folder_dataset_names_its_folder(tmp_path: Path) -> None:
    info = {"train": {"dataset": "cifar10", "split": "train", "root": str(tmp_path), "size": 50000}}
    [dataset_input] = tracking.dataset_inputs(info)
    assert dataset_input.dataset.name == "cifar10-train" and dataset_input.dataset.source_type == "local"
    assert json.loads(dataset_input.dataset.source) == {"uri": str(tmp_path)}


def test_epochs_are_steps_not_a_metric(store: tracking.Tracking) -> None:
    run = store.open_trial_run("steps", "steps/row/seed0", run_name="row seed0", tags={}, params={})
    log = tracking.EpochLog(store, run.info.run_id)
    for epoch in (0, 1):
        log.log({"epoch": epoch, "train_loss": 2.0 - epoch, "top1": 10.0 * (epoch + 1)})
    again = tracking.EpochLog(store, run.info.run_id)  # a restarted worker knows both epochs are in
    again.log({"epoch": 1, "train_loss": 9.0, "top1": 0.0})
    metrics = store.client.get_run(run.info.run_id).data.metrics
    assert "epoch" not in metrics and again.logged == {0, 1}
    assert [m.value for m in store.client.get_metric_history(run.info.run_id, "train_loss")] == [2.0, 1.0]


def test_sops_are_logged_once() -> None:
    """The papers' SOPs are the ACs: one metric, not two equal ones."""
    import torch

    from spikingformer import build_model
    from spikingformer.energy import measure_energy

    model = build_model("spikingformer_cifar_2_384", embed_dim=32, depth=1, num_heads=2, T=1, num_classes=10)
    report = measure_energy(model.eval(), [torch.rand(2, 3, 32, 32)])
    figures = energy_figures({"paper": report})
    assert "sops_G" in figures and "acs_G" not in figures


def test_unset_options_compare_equal_to_old_none_params() -> None:
    """Runs tracked before unset options were left out logged them as "None": not a configuration change."""
    train = TrainConfig.from_dict({"model": {"name": "spikingformer_cifar_2_384"}}).to_dict()
    old = flatten(train)
    new = {k: v for k, v in old.items() if v != "None"}
    assert tracking.config_changes(old, train) == [] and tracking.config_changes(new, train) == []
    assert tracking.config_changes({**new, "optim.lr": "1.0"}, train)
