"""What the end-to-end tests read back from MLflow: the trial runs of an experiment, and a finished trial's record."""

from __future__ import annotations

from harness import tracking


def runs_by_key(store: tracking.Tracking, name: str) -> dict[str, object]:
    runs = store.trial_runs(name)
    keys = [r.data.tags[tracking.RUN_KEY] for r in runs]
    assert len(keys) == len(set(keys)), f"duplicate MLflow runs: {keys}"
    return {r.data.tags[tracking.RUN_KEY]: r for r in runs}


def check_finished_trial(store: tracking.Tracking, run) -> None:
    """A finished trial run holds its figures, params, provenance, artifacts and one entry per epoch."""
    assert run.info.status == "FINISHED"
    for key in ("best_top1", "last_top1", "params", "dense_flops_G", "sops_G", "macs_G", "energy_mJ",
                "firing_rate_mean"):
        assert key in run.data.metrics, key
    assert run.data.metrics["energy_mJ"] > 0 and 0 <= run.data.metrics["firing_rate_mean"] <= 1
    if run.data.params["model.name"].startswith("spikformer"):  # also costed with spike counts as ACs (equal
        # when its residual stream happens to stay binary, as in a barely trained model)
        assert 0 < run.data.metrics["energy_mJ_spike_counts"] <= run.data.metrics["energy_mJ"]
    else:
        assert "energy_mJ_spike_counts" not in run.data.metrics
    assert "model.name" in run.data.params and "resources.num_workers" in run.data.params
    tags = run.data.tags
    assert {"sfh.git_sha", "sfh.version.ray", "sfh.device", "sfh.lif", "sfh.paper_table"} <= set(tags)
    params = run.data.params  # the per-rank eval batch the figures were measured at, and the model's coupling
    eval_batch = params["data.eval_batch_size"]
    assert tags[tracking.EVAL_BATCH] == (params["data.batch_size"] if eval_batch == "None" else eval_batch)
    assert (tags[tracking.BATCH_COUPLING] == "none") == (not params["model.name"].startswith("qkformer"))
    parent = store.client.get_run(tags[tracking.PARENT_RUN_ID])
    assert parent.data.tags[tracking.KIND] == "parent"
    assert {a.path for a in store.client.list_artifacts(run.info.run_id)} == {
        "config.yaml", "energy_layers.json", "energy.md", "energy_memory.json", "energy_memory.md",
    }
    # Memory-inclusive beside its quantized ANN, and NeuroBench's metrics (measured by the package itself).
    for key in ("energy_mJ_memory", "energy_mJ_memory_silent", "energy_mJ_qann", "firing_rate_spikes",
                "neurobench/parameter_count", "neurobench/activation_sparsity", "neurobench/synops_dense",
                "neurobench/synops_effective_acs", "neurobench/synops_effective_macs"):
        assert key in run.data.metrics, key
    assert run.data.metrics["neurobench/parameter_count"] == run.data.metrics["params"]
    epochs = sorted(m.step for m in store.client.get_metric_history(run.info.run_id, tracking.EPOCH_KEY))
    total = int(run.data.params["schedule.epochs"]) + int(run.data.params["schedule.cooldown_epochs"])
    assert epochs == list(range(total))
