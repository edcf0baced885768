"""MLflow bookkeeping and the results table, against a real sqlite tracking store (no Ray)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
import yaml

from harness import results, tracking
from harness.experiment import Experiment
from harness.experiment.resolve import flatten

EXPERIMENT = {
    "name": "table",
    "paper": {"arxiv": "2304.11954v5", "table": "Table X", "source": "test"},
    "recipe": "digits",
    "tolerance": {"pass_pp": 0.5, "warn_pp": 1.5},
    "rows": [
        {"id": row, "model": {"name": "spikingformer_cifar_2_384"},
         "paper": {"top1": 90.0, "params_M": 0.1, "sops_G": 0.002, "energy_mJ": 0.01, "source": f"src {row}"}}
        for row in ("pass", "warn", "fail", "running", "notrun", "error", "stopped", "noref")
    ],
}
EXPERIMENT["rows"][-1]["paper"] = {}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tracking.Tracking:
    """One store for the module (creating the sqlite schema takes seconds); each test its own experiment."""
    return tracking.Tracking(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def trial(
    store: tracking.Tracking, row: str, seed: int, status: str, experiment: str = "table", **metrics: float
) -> str:
    key = tracking.run_key(experiment, row, seed)
    run = store.open_trial_run(
        experiment, key, run_name=key, tags={tracking.ROW: row, tracking.SEED: str(seed)}, params={"a.b": "1"}
    )
    store.log_metrics(run.info.run_id, metrics)
    if status != "RUNNING":
        store.end(run.info.run_id, status)
    return run.info.run_id


def test_open_trial_run_finds_the_same_run_by_key(store: tracking.Tracking) -> None:
    first = trial(store, "pass", 1, "FAILED", experiment="reopen")
    run = store.open_trial_run("reopen", "reopen/pass/seed1", run_name="x", tags={}, params={"a.b": "2"})
    assert run.info.run_id == first and run.info.status == "RUNNING"  # reopened, not duplicated
    assert run.data.params == {"a.b": "1"}  # params are written once, at creation
    store.end(first, "FINISHED")
    again = store.open_trial_run("reopen", "reopen/pass/seed1", run_name="x", tags={}, params={})
    assert again.info.status == "FINISHED"
    assert len(store.trial_runs("reopen")) == 1
    assert store.trial_runs("never-tracked") == []


def test_epoch_log_logs_each_epoch_once_and_backfills(store: tracking.Tracking) -> None:
    run_id = trial(store, "pass", 1, "RUNNING", experiment="epochs")
    log = tracking.EpochLog(store, run_id)
    log.log({"epoch": 0, "train_loss": 2.0, "top1": 10.0, "lr": 0.1})
    log.log({"epoch": 1, "train_loss": 1.5, "top1": math.nan, "lr": 0.2})  # not evaluated: top1 left out
    restarted = tracking.EpochLog(store, run_id)  # a worker restarted from the epoch-0 checkpoint
    restarted.log({"epoch": 1, "train_loss": 1.5, "top1": 11.0, "lr": 0.2})
    restarted.backfill([{"epoch": 0, "train_loss": 2.0, "top1": 99.0}, {"epoch": 1, "train_loss": 1.5, "top1": 11.0},
                        {"epoch": 2, "train_loss": 1.0, "top1": 12.0}])
    history = store.client.get_metric_history(run_id, tracking.EPOCH_KEY)
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert store.client.get_metric_history(run_id, "epoch") == []  # the epoch is each value's step
    assert [(m.step, m.value) for m in store.client.get_metric_history(run_id, "top1")] == [(0, 10.0), (2, 12.0)]


def test_flatten_and_provenance() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2], "f": {}}) == {
        "a.b": "1", "a.c.d": "None", "e": "[1, 2]", "f": "{}",
    }
    tags = tracking.provenance_tags()
    assert set(tags) >= {"sfh.git_sha", "sfh.version.torch", "sfh.version.ray", "sfh.version.mlflow"}
    assert "sfh.lif" not in tags  # the trial tags the LIF that actually ran on its device


def test_collect_aggregates_seeds_and_judges_rows(store: tracking.Tracking, tmp_path: Path) -> None:
    experiment = Experiment.from_dict(EXPERIMENT, where="inline")
    final = {"params": 1.2e5, "sops_G": 0.003, "energy_mJ": 0.02}
    trial(store, "pass", 1, "FINISHED", best_top1=90.2, last_top1=89.0, **final)
    trial(store, "pass", 2, "FINISHED", best_top1=89.8, last_top1=89.4, **final)
    trial(store, "warn", 1, "FINISHED", best_top1=89.0, last_top1=88.0)
    trial(store, "fail", 1, "FINISHED", best_top1=80.0, last_top1=80.0)
    trial(store, "running", 1, "FINISHED", best_top1=90.0, last_top1=90.0)
    trial(store, "running", 2, "RUNNING", top1=50.0)
    trial(store, "error", 1, "FAILED", top1=10.0)
    trial(store, "stopped", 1, "KILLED", top1=10.0)  # Ctrl-C: to resume, not an error
    trial(store, "noref", 1, "FINISHED", best_top1=70.0, last_top1=69.0)
    searched = store.open_trial_run("table", "table/pass/seed1/trial_x", run_name="s",
                                    tags={tracking.ROW: "pass", tracking.SEED: "1"}, params={})
    store.log_metrics(searched.info.run_id, {"best_top1": 0.0})  # a search trial: not a seed of the row

    rows = {r.row_id: r for r in results.collect(experiment, store.uri)}
    assert {k: r.verdict for k, r in rows.items()} == {
        "pass": "PASS", "warn": "WARN", "fail": "FAIL", "running": "RUNNING", "notrun": "NOT RUN",
        "error": "ERROR", "stopped": "INTERRUPTED", "noref": "n/a",
    }
    ok = rows["pass"]
    assert [r.seed for r in ok.runs] == [1, 2] and ok.paper.source == "src pass"
    assert ok.best_top1_mean == pytest.approx(90.0) and ok.best_top1_sd == pytest.approx(0.2828, abs=1e-4)
    assert ok.last_top1_mean == pytest.approx(89.2) and ok.delta == pytest.approx(0.0, abs=1e-9)
    assert (ok.params, ok.sops_G, ok.energy_mJ) == (1.2e5, 0.003, 0.02)
    assert rows["warn"].best_top1_sd is None and rows["warn"].delta == pytest.approx(-1.0)

    table = results.render_markdown(list(rows.values()))
    assert (
        "| pass | 90.00 | 90.00 ± 0.28 | 89.20 ± 0.28 | +0.00 | 0.12 / 0.1 | 0.003 / 0.002 | 0.02 / 0.01 | 2/2 | PASS |"
    ) in table
    assert "| noref | n/a | 70.00 | 69.00 | n/a | n/a / n/a | n/a / n/a | n/a / n/a | 1/1 | n/a |" in table
    assert "| notrun | 90.00 | n/a | n/a | n/a |" in table

    parsed = list(csv.DictReader(io.StringIO(results.render_csv(list(rows.values())))))
    assert [r["row"] for r in parsed] == [r["id"] for r in EXPERIMENT["rows"]]
    assert parsed[0]["verdict"] == "PASS" and float(parsed[0]["best_top1_mean"]) == pytest.approx(90.0)

    (tmp_path / "table.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    from harness.cli import main

    assert main(["table", str(tmp_path / "table.yaml"), "--tracking-uri", store.uri, "--format", "csv",
                 "--out", str(tmp_path / "t.csv")]) == 0
    costs = results.row_costs(store, list(rows.values()), None)
    written = (tmp_path / "t.csv").read_text()
    assert written == results.render_csv(list(rows.values()), costs)  # with what each row cost, as the markdown
    spent = {r["row"]: r for r in csv.DictReader(io.StringIO(written))}
    assert spent["pass"]["training_energy"] == "n/a: not recorded by this run" and spent["notrun"]["device_hours"] == ""

    # Two experiments in one CSV: one header, each row under its own experiment.
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**EXPERIMENT, "name": "other"}))
    assert main(["table", str(tmp_path / "table.yaml"), str(tmp_path / "other.yaml"), "--tracking-uri", store.uri,
                 "--format", "csv", "--out", str(tmp_path / "both.csv")]) == 0
    lines = (tmp_path / "both.csv").read_text().splitlines()
    assert lines.count(lines[0]) == 1 and len(lines) == 1 + 2 * len(EXPERIMENT["rows"])
    assert [r["experiment"] for r in csv.DictReader(io.StringIO("\n".join(lines)))][-1] == "other"


def test_formatters_keep_small_values_readable() -> None:
    """Shared by the markdown table and the HTML report: a demo's SOPs are thousandths of a G, not 0.00."""
    assert results.format_number(0.00252) == "0.00252" and results.format_number(74.792) == "74.79"
    assert results.format_number(0) == "0.00" and results.format_number(None) == results.NA
    assert results.format_pair(0.00252, None) == "0.00252 / n/a"
    assert results.format_spread(74.4, 0.283) == "74.40 ± 0.28" and results.format_spread(None, None) == "n/a"
    assert results.format_delta(-0.391) == "-0.39" and results.format_delta(None) == "n/a"


def test_row_setups_and_tracked_variants(store: tracking.Tracking) -> None:
    experiment = Experiment.from_dict({**EXPERIMENT, "name": "variants"}, where="inline")
    setups = results.row_setups(experiment)
    # the recipe sets T=2 and 6 epochs; the row's depth and width overrides show in its label
    assert setups["pass"] == results.RowSetup("spikingformer_cifar_2_384", "digits", 2,
                                              "Spikingformer-1-64, from spikingformer_cifar_2_384", 6)
    for name in ("variants", "variants-smoke", "variants-e3", "variants-smoke-e3", "variants-other"):
        trial(store, "pass", 1, "FINISHED", experiment=name, best_top1=1.0)
    store.experiment_id("variants-e5")  # tracked once, no run in it
    reader = results.RunReader(store.uri)
    assert reader.variants(experiment) == ["variants", "variants-e3", "variants-smoke", "variants-smoke-e3"]
    assert [r.verdict for r in reader.rows(experiment, name="variants-e3")][:2] == ["FAIL", "NOT RUN"]


def test_a_batch_coupled_model_at_another_per_rank_batch_is_not_comparable(store: tracking.Tracking) -> None:
    """QKFormer declares that each sample depends on its batch; its rows compare at upstream's per-rank batches."""
    qkformer = {"name": "qkformer_cifar_4_384", "kwargs": {"embed_dim": 32, "depth": 3, "num_heads": 4}}
    paper = {"top1": 90.0, "train_batch_per_rank": 64, "eval_batch_per_rank": 64}
    rows = {  # row -> (model, per-rank train / eval batch of its run)
        "upstream-batch": (qkformer, (64, 64)),
        "other-eval-batch": (qkformer, (64, 2)),
        "per-sample": ({**qkformer, "kwargs": {**qkformer["kwargs"], "batch_coupled_proj_lif": False}}, (2, 2)),
        "not-coupled": ({"name": "spikingformer_cifar_2_384"}, (2, 2)),
    }
    table = [{"id": row, "model": model, "paper": paper} for row, (model, _) in rows.items()]
    experiment = Experiment.from_dict({**EXPERIMENT, "name": "coupled", "rows": table}, where="inline")
    for row, (_, (train, evaluation)) in rows.items():
        key = tracking.run_key("coupled", row, 1)
        run = store.open_trial_run("coupled", key, run_name=key, tags={tracking.ROW: row, tracking.SEED: "1"},
                                   params={"data.batch_size": str(train)})
        store.set_tags(run.info.run_id, {tracking.EVAL_BATCH: str(evaluation)})
        store.log_metrics(run.info.run_id, {"best_top1": 90.1})
        store.end(run.info.run_id, "FINISHED")

    found = {r.row_id: r for r in results.collect(experiment, store.uri)}
    assert {k: r.verdict for k, r in found.items()} == {
        "upstream-batch": "PASS", "other-eval-batch": results.NOT_COMPARABLE, "per-sample": "PASS",
        "not-coupled": "PASS",
    }
    assert (found["other-eval-batch"].runs[0].train_batch, found["other-eval-batch"].runs[0].eval_batch) == (64, 2)
    table = results.render_markdown(list(found.values()))
    assert "- other-eval-batch seed 1: per-rank batch 64 / 2, upstream 64 / 64" in table
