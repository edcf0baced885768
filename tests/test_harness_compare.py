"""``sfh compare``: one table across families, from real MLflow runs (sqlite), both energy conventions labelled."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import tracking
from harness.cli import main

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def log_finished(store: tracking.Tracking, name: str, row: str, seed: int, metrics: dict[str, float]) -> None:
    key = tracking.run_key(name, row, seed)
    tags = {tracking.EXPERIMENT: name, tracking.ROW: row, tracking.SEED: str(seed)}
    run_id = store.open_trial_run(name, key, run_name=key, tags=tags, params={}).info.run_id
    store.log_metrics(run_id, metrics)
    store.end(run_id, "FINISHED")


def test_compare_lines_up_families_under_both_conventions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = tracking.Tracking(uri)
    sdt = {"best_top1": 95.1, "last_top1": 95.0, "params": 10_233_418, "sops_G": 0.5, "energy_mJ": 0.9,
           "sops_G_common": 0.5, "energy_mJ_common": 0.9, "energy_mJ_memory": 2.5, "energy_mJ_qann": 3.0,
           "firing_rate_spikes": 0.1, "break_even_rate": 0.15}
    log_finished(store, "sdt-cifar10", "2-512", 42, sdt)
    log_finished(store, "sdt-cifar10", "2-512", 43, {**sdt, "best_top1": 95.3})
    spikformer = {"best_top1": 70.0, "last_top1": 69.8, "params": 16_816_024, "sops_G": 6.8, "energy_mJ": 12.4,
                  "sops_G_common": 6.8, "energy_mJ_common": 12.4, "energy_mJ_spike_counts": 7.7}
    log_finished(store, "spikformer-imagenet", "8-384", 42, spikformer)
    files = [str(EXPERIMENTS / "sdt-cifar10.yaml"), str(EXPERIMENTS / "spikformer-imagenet.yaml")]

    assert main(["compare", *files, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "paper conv. / common" in out and "common ruler" in out
    assert ("| sdt-cifar10 | 2-512 | sdt_cifar_2_512 | cifar10 | 4 | 10.23 | 0.5 / 0.5 | 0.9 / 0.9 / n/a "
            "| 2.50 / 3.00 | 0.1 / 0.15 | 95.60 / 95.20 | 2/2 | PASS |") in out
    assert ("| spikformer-imagenet | 8-384 | spikformer_8_384 | imagenet | 4 | 16.82 | 6.80 / 6.80 "
            "| 12.40 / 12.40 / 7.73 |") in out
    assert "| spikformer-imagenet | 8-512 |" in out and "0/0 | NOT RUN |" in out  # rows without runs stay listed

    assert main(["compare", *files, "--tracking-uri", uri, "--format", "csv"]) == 0
    header, first, *_ = capsys.readouterr().out.splitlines()
    assert header.startswith("table,row,model,dataset,T,params_M,sops_G_paper_conv,sops_G_common,energy_mJ_paper_conv")
    assert first.startswith("sdt-cifar10,2-512,sdt_cifar_2_512,cifar10,4,10.233418,0.5,0.5,0.9,0.9,,2.5,3.0,0.1,0.15,"
                            "95.6,95.19")


def test_the_report_index_lines_up_the_families(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``sfh report`` of two families' tables: each gets its report, and the index their rows on one table."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = tracking.Tracking(uri)
    log_finished(store, "sdt-cifar10", "2-512", 42, {"best_top1": 95.1, "last_top1": 95.0, "params": 10_233_418,
                                                     "sops_G": 0.5, "energy_mJ": 0.9, "sops_G_common": 0.5,
                                                     "energy_mJ_common": 0.9})
    log_finished(store, "qkformer-cifar10", "4-384", 42, {"best_top1": 96.0, "last_top1": 95.9, "params": 6_740_000,
                                                          "sops_G": 0.7, "energy_mJ": 1.1, "sops_G_common": 0.6,
                                                          "energy_mJ_common": 1.0})
    files = [str(EXPERIMENTS / "sdt-cifar10.yaml"), str(EXPERIMENTS / "qkformer-cifar10.yaml")]
    assert main(["report", *files, "--tracking-uri", uri, "--out", str(tmp_path / "reports")]) == 0
    index = (tmp_path / "reports" / "index.html").read_text()
    assert "Across families" in index and "sdt_cifar_2_512" in index and "qkformer_cifar_4_384" in index
    assert "0.7 / 0.6" in index and "1.10 / 1.00 / n/a" in index  # QKFormer: paper conv. / common (/ paper)
    assert (tmp_path / "reports" / "sdt-cifar10" / "index.html").is_file()
