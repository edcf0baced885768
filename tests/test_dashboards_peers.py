"""The peer table loads, every plotted value carries an evidence mark, and bad entries are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboards.peers import load_peers, peers_for
from spikingformer.config import DATASETS


def test_peer_table_is_valid_and_covers_the_four_families() -> None:
    peers = load_peers()
    assert {p.dataset for p in peers} <= set(DATASETS)
    imagenet = peers_for(peers, "imagenet")
    assert {"Spikformer", "Spike-driven Transformer", "QKFormer", "SpikingResformer"} <= {p.model for p in imagenet}
    qk768 = next(p for p in imagenet if p.variant == "HST-10-768")
    assert (qk768.top1, qk768.params_M, qk768.energy_mJ) == (84.22, 64.96, 38.91)
    assert not qk768.unverified("top1", "params_M") and qk768.unverified("top1", "energy_mJ")


def test_bad_entries_name_the_entry(tmp_path: Path) -> None:
    base = "{model: X, variant: v, dataset: imagenet, time_steps: 4, top1: 1.0, source: s"
    cases = {
        base + ", evidence: {}}": "top1 needs exactly one evidence mark",
        base + ", evidence: {top1: Q}}": "evidence marks",
        base + ", evidence: {top1: R}, colour: red}": "unknown keys",
        "{model: X, variant: v, dataset: imagenet, top1: 1.0, source: s, evidence: {top1: R}}": (
            r"missing required keys \['time_steps'\]"
        ),
        "{model: X, variant: v, dataset: imagenet, time_steps: four, top1: 1.0, source: s, evidence: {top1: R}}": (
            "invalid literal for int"
        ),
    }
    for text, message in cases.items():
        path = tmp_path / "peers.yaml"
        path.write_text(f"- {text}\n")
        with pytest.raises(ValueError, match=message) as err:
            load_peers(path)
        assert "X v" in str(err.value)
    path.write_text("- just a string\n")
    with pytest.raises(ValueError, match="peers.yaml entry 0: expected a mapping"):
        load_peers(path)


def test_plotted_values_are_like_for_like() -> None:
    """ImageNet points at 224x224; CIFAR-100 params with the 100-class head, counted as the README counts
    (without the unused LayerNorms)."""
    peers = load_peers()
    sdt = next(p for p in peers_for(peers, "imagenet") if (p.model, p.variant) == ("Spike-driven Transformer", "8-768"))
    assert sdt.top1 == 76.32 and "288" in sdt.note  # 77.07 is the 288x288 test
    step = {p.dataset: p.params_M for p in peers if p.model == "Spikingformer (STEP re-run)"}
    assert step == {"cifar10": 9.32, "cifar100": 9.35}
