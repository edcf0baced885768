"""Energy accounting (spikingformer.energy, ``sfh energy``) against upstream's counts and its energy logs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from helpers.datasets import write_cifar
from helpers.golden import GOLDEN
from helpers.spikes import lively
from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter
from torch import nn

from harness.cli import main
from harness.reference.logs import EnergyLog, load_energy_log
from spikingformer import build_model
from spikingformer._validation import deep_merge
from spikingformer.checkpoints.loading import load_weights, read_checkpoint
from spikingformer.config import TrainConfig
from spikingformer.energy import (
    COMMON,
    GIGA,
    EnergyReport,
    energy_from_rates,
    measure_conventions,
    measure_energy,
    profile_ops,
    spike_flags,
)
from spikingformer.models.spikformer import Spikformer
from spikingformer.models.spikingformer import Spikingformer
from spikingformer.recipes import load_recipe
from spikingformer.training.engine import fit

TINY = dict(layout="cifar", img_size=16, embed_dim=32, depth=2, num_heads=2, T=2, num_classes=5)


def meta_model(name: str, **overrides: object) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **overrides)


# --- Dense conv + linear MACs per image, T included, as upstream's counter gives them-------------------------------

# The table rounds 74.074996 G (the exact sum of the 8-768 log's per-layer counts) to 74.08 via 74.075,
# hence the tolerance of half a unit in the last place plus 1e-5.
DENSE_G = [
    ("spikingformer_8_384", {}, 18.66, 0.260),
    ("spikingformer_8_512", {}, 33.04, 0.347),
    ("spikingformer_8_768", {}, 74.08, 0.520),
    ("spikingformer_cifar_4_256", {}, 1.64, None),
    ("spikingformer_cifar_2_384", {}, 2.78, None),
    ("spikingformer_cifar_4_384", {}, 3.69, None),
    ("spikingformer_dvs_2_256", {"T": 10}, 3.75, None),
    ("spikingformer_dvs_2_256", {"T": 16}, 5.99, None),
]


@pytest.mark.parametrize("name,overrides,dense_g,first_conv_g", DENSE_G)
def test_dense_ops_match_spec_table(name: str, overrides: dict, dense_g: float, first_conv_g: float | None) -> None:
    profile = profile_ops(meta_model(name, **overrides))
    assert profile.dense_flops / GIGA == pytest.approx(dense_g, abs=0.00501)
    if first_conv_g is not None:
        assert profile.layers[0].dense_ops / GIGA == pytest.approx(first_conv_g, abs=0.0005)


# --- Replay the upstream energy logs (experiments/reference/*.energy.json) through our op counts -------------


def replay(log: EnergyLog, name: str, num_heads: int) -> EnergyReport:
    """Cost our model at the log's rates: layers matched by order (checked by their dense ops)."""
    profile = profile_ops(meta_model(name, num_heads=num_heads))
    assert len(profile.layers) == len(log.layers) and len(profile.attention) == len(log.qkv_rates)
    for ours, theirs in zip(profile.layers, log.layers, strict=True):
        assert ours.dense_ops == pytest.approx(theirs.dense_ops, rel=1e-8), (ours.name, theirs.name)
    rates = {
        ours.name: None if theirs.rate == 1.0 else theirs.rate
        for ours, theirs in zip(profile.layers, log.layers, strict=True)
    }
    qkv = {attn.name: qkv_rates for attn, qkv_rates in zip(profile.attention, log.qkv_rates, strict=True)}
    return energy_from_rates(profile, rates, qkv)


def test_reproduces_upstream_8_512() -> None:
    log = load_energy_log("spikingformer-imagenet-8-512")
    assert log.ssa_info["Nheads"] == 8 and log.energy_mJ == pytest.approx(7.4635, abs=1e-4)
    report = replay(log, "spikingformer_8_512", num_heads=8)
    print(f"\n8-512: {report.energy_mj:.6f} mJ, ACs {report.acs / GIGA:.6f} G, MACs {report.macs / GIGA:.6f} G")
    assert report.energy_mj == pytest.approx(7.4635, rel=0.002)
    assert report.acs / GIGA == pytest.approx(6.5175, abs=1e-4)
    # No forward pass: nothing claims images or firing rates it did not measure.
    assert report.images is None and report.firing_rate_mean is None
    assert not {"images", "firing_rate_mean", "top1"} & set(report.totals())
    assert "given firing rates" in report.to_table() and "| LIF |" not in report.to_table()
    assert report.macs / GIGA == pytest.approx(0.3473, abs=1e-4)
    # All batches were full (50000 / 16), so even the per-layer ACs agree with the log's.
    for ours, theirs in zip(report.layers, log.layers, strict=True):
        assert ours.ac_ops == pytest.approx(theirs.acs, rel=1e-7)
        assert ours.mac_ops == pytest.approx(theirs.macs, rel=1e-8)


def test_reproduces_upstream_8_768_with_12_and_8_heads() -> None:
    log = load_energy_log("spikingformer-imagenet-8-768")
    assert log.ssa_info["Nheads"] == 12
    logged = replay(log, "spikingformer_8_768", num_heads=12)
    # The log's last batch holds 8 of 12 images: upstream's per-batch-averaged rates then differ from
    # its op-weighted ACs by ~3e-6, which is all that separates us from its 13.658865 mJ.
    assert logged.energy_mj == pytest.approx(log.energy_mJ, rel=1e-5)
    assert logged.energy_mj == pytest.approx(13.6589, rel=0.002)
    assert logged.acs / GIGA == pytest.approx(12.5137, abs=1e-4)
    assert logged.macs / GIGA == pytest.approx(0.5210, abs=1e-4)

    real = replay(log, "spikingformer_8_768", num_heads=8)  # the heads the model was trained with
    ssa_12, ssa_8 = (sum(a.ac_ops for a in r.attention) / GIGA for r in (logged, real))
    print(
        f"\n8-768: 12 heads {logged.energy_mj:.4f} mJ (SSA {ssa_12:.4f} G); "
        f"8 heads {real.energy_mj:.4f} mJ (SSA {ssa_8:.4f} G, ACs {real.acs / GIGA:.4f} G)"
    )
    assert ssa_12 == pytest.approx(0.0351, abs=1e-4) and ssa_8 == pytest.approx(0.0526, abs=1e-4)
    assert real.energy_mj == pytest.approx(13.6746, abs=1e-4)
    assert real.energy_mj - logged.energy_mj == pytest.approx(0.0158, abs=1e-4)


# --- the measured path ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16)
    return lively(Spikingformer(**TINY), x), x


def test_measured_and_given_rates_share_the_arithmetic(tiny: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = tiny
    measured = measure_energy(model, [(x, torch.zeros(6, dtype=torch.long))])
    assert measured.images == 6 and measured.top1 is not None
    assert 0.05 < measured.firing_rate_mean < 0.5
    kinds = {layer.name: layer.mac_ops > 0 for layer in measured.layers}
    assert [name for name, mac in kinds.items() if mac] == ["tokenizer.0.conv_bn.conv", "head"]
    head = measured.layers[-1]
    assert head.mac_ops == head.dense_ops == 32 * 5 + 5

    rates = {layer.name: None if layer.mac_ops else layer.input_rate for layer in measured.layers}
    qkv = {a.name: (a.rate_q, a.rate_k, a.rate_v) for a in measured.attention}
    given = energy_from_rates(profile_ops(model), rates, qkv)
    assert given.dense_flops == measured.dense_flops
    assert given.macs == pytest.approx(measured.macs, rel=1e-12)
    assert given.acs == pytest.approx(measured.acs, rel=1e-12)
    assert given.energy_mj == pytest.approx(measured.energy_mj, rel=1e-12)


def test_batches_are_weighted_by_images(tiny: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = tiny
    whole = measure_energy(model, [x])
    split = measure_energy(model, [x[:5], x[5:]])  # uneven batches; each sample's spikes are the same
    assert split.images == whole.images == 6
    assert split.acs == pytest.approx(whole.acs, rel=1e-9)
    assert split.neuron_rates == pytest.approx(whole.neuron_rates, rel=1e-9)


def test_attention_geometry_is_read_from_the_model(tiny: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = tiny
    report = measure_energy(model, [x])
    attn = report.attention[0]
    assert (attn.time_steps, attn.heads, attn.tokens, attn.head_dim) == (2, 2, 16, 16)
    rates = report.neuron_rates
    assert (attn.rate_q, attn.rate_k, attn.rate_v) == tuple(rates[f"blocks.0.attn.{p}_lif"] for p in "qkv")
    expected = 2 * 2 * 16 * 16**2 * (min(attn.rate_k, attn.rate_v) + attn.rate_q)
    assert attn.ac_ops == pytest.approx(expected, rel=1e-12)


def test_spike_test_conventions() -> None:
    def passes(x: list[float], *counts: int) -> list[bool]:
        return [bool(flag) for flag in spike_flags(torch.tensor(x), counts or (1,))]

    assert passes([0.0, 1.0, 1.0, 0.0]) == passes([0.25, 0.75]) == [True]  # upstream: 2 values in [0, 1]
    assert passes([0.0, 1.0, 2.0, 3.0], 1, 2, 30) == [False, False, True]
    assert passes([0.0, 0.5, 1.0], 1, 30) == [False, False]
    assert passes([-1.0, 0.0], 1, 30) == [False, False]
    assert passes([0.0, 1e-45, 1.0]) == [False]  # a subnormal third value is still a third value


def test_spikformer_under_both_conventions() -> None:
    """Spikformer's stream carries spike sums: MACs under ``Nspks_max = 1``, ACs under 30."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    model = lively(Spikformer(**TINY), x)
    declared = model.energy_conventions()
    assert declared["paper"] == COMMON and declared["spike_counts"].max_spike_count == 30
    strict, counts = (measure_energy(model, [x], convention=declared[k]) for k in ("paper", "spike_counts"))
    always_mac = ("tokenizer.stages.0.conv_bn.conv", "head")
    moved = [layer.name for layer in strict.layers if layer.mac_ops and layer.name not in always_mac]
    stream_inputs = ("attn.q.conv", "attn.k.conv", "attn.v.conv", "mlp.fc1.conv")
    assert moved == [f"blocks.{b}.{n}" for b in range(2) for n in stream_inputs]
    by_name = {layer.name: layer for layer in counts.layers}
    for name in moved:
        before, after = next(x for x in strict.layers if x.name == name), by_name[name]
        assert before.mac_ops == before.dense_ops and before.ac_ops == 0
        assert after.mac_ops == 0 and after.ac_ops == pytest.approx(after.dense_ops * after.input_rate)
        assert 0 < after.input_rate < 2  # mean spike count of a stream of sums, not a rate in [0, 1]
    assert counts.macs == sum(by_name[n].dense_ops for n in always_mac)
    assert strict.macs - counts.macs == pytest.approx(sum(by_name[n].dense_ops for n in moved))
    assert counts.saving_vs(strict) == pytest.approx(1 - counts.energy_mj / strict.energy_mj)
    assert 0 < counts.saving_vs(strict) < 1
    # The paper's comparison, on the same tiny geometry: Spikingformer against both baseline countings.
    ours = measure_energy(lively(Spikingformer(**TINY), x), [x])
    print(f"\ntiny Spikingformer saves {ours.saving_vs(strict):.1%} / {ours.saving_vs(counts):.1%} vs Spikformer")
    assert ours.saving_vs(strict) > ours.saving_vs(counts)
    # One pass under both conventions gives exactly the two separate passes.
    both = measure_conventions(model, [x], (declared["paper"], declared["spike_counts"]))
    assert [(r.convention, r.max_spike_count) for r in both] == [("common", 1), ("spike_counts", 30)]
    for one, alone in zip(both, (strict, counts), strict=True):
        assert (one.macs, one.acs, one.neuron_rates) == (alone.macs, alone.acs, alone.neuron_rates)


class InPlace(nn.Module):
    """Two convs read one tensor, written in place between them: the second must not reuse the first's test."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv1d(2, 2, 1), nn.Conv1d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = (x > 0).float()
        y = self.a(spikes)
        return y + self.b(spikes.add_(1.0))


def test_per_tensor_statistics_see_in_place_writes() -> None:
    report = measure_energy(InPlace(), [torch.randn(3, 2, 5)])
    a, b = report.layers
    assert a.mac_ops == 0 and 0 < a.ac_ops < a.dense_ops  # {0, 1}: spikes
    assert b.mac_ops == b.dense_ops and b.ac_ops == 0  # then {1, 2}: not spikes


def test_cross_check_with_spikingjelly_op_counter(tiny: tuple[nn.Module, torch.Tensor]) -> None:
    """Agreement with spikingjelly 2.0's SynOpCounter/MACCounter, and every difference explained.

    1. Biases: upstream counts one op per output for a bias (charged at the input's rate for ACs);
       spikingjelly counts weights only.
    2. 1x1 convs: otherwise identical (every spike meets C_out weights).
    3. 3x3 convs with zero padding: spikingjelly skips the taps that fall into the padding, upstream
       charges 9 per spike (dense ops x rate); the gap is exactly the border's missing taps.
    4. SSA: the Q.(K^T V) product agrees (nnz(Q) d); for K^T V spikingjelly counts the actual
       coincidences, which the upstream term T h N d^2 min(rate_k, rate_v) bounds from above.
    """
    model, x = tiny
    batch = x.shape[0]
    report = measure_energy(model, [x])
    conv_inputs: dict[str, torch.Tensor] = {}

    def keep_input(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        conv_inputs[names[module]] = inputs[0]

    names = {m: name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)}
    hooks = [m.register_forward_hook(keep_input) for m in names]
    syn, mac = SynOpCounter(), MACCounter(extra_ignore_modules=[nn.BatchNorm1d, nn.BatchNorm2d])
    with torch.no_grad(), DispatchCounterMode([syn, mac]):
        model(x)
    for hook in hooks:
        hook.remove()
    counts, macs = syn.get_counts(), mac.get_counts()

    def sj(records: dict, name: str, op: str) -> float:
        return sum(v for f, v in records[f"Spikingformer.{name}"].items() if op in str(f)) / batch

    assert mac.get_total() / batch == pytest.approx(report.macs - 5, rel=1e-12)  # head bias: K = 5 ops
    for layer in report.layers:
        module = model.get_submodule(layer.name)
        op = "addmm" if isinstance(module, nn.Linear) else "convolution"
        # dense = (weights per output + 1 for the bias) x outputs, so the bias share is dense / (w + 1)
        bias = 0.0 if module.bias is None else layer.dense_ops / (module.weight[0].numel() + 1)
        if layer.mac_ops:
            assert sj(macs, layer.name, op) == pytest.approx(layer.mac_ops - bias, rel=1e-12)
            continue
        ours = layer.ac_ops - bias * layer.input_rate
        if module.kernel_size == (1,) or module.kernel_size == (1, 1):
            assert sj(counts, layer.name, op) == pytest.approx(ours, rel=1e-9)
        else:
            spikes = conv_inputs[layer.name]
            taps = nn.functional.conv2d(torch.ones_like(spikes[:, :1]), torch.ones(1, 1, 3, 3), padding=1)
            border = float((spikes * (9 - taps)).sum()) * module.out_channels / batch
            assert border > 0 and sj(counts, layer.name, op) == pytest.approx(ours - border, rel=1e-9)
    for attn in report.attention:
        q_term = attn.dense_ops / 2 * attn.rate_q
        kv_coincidences = sj(counts, attn.name, "bmm") - q_term
        assert 0 < kv_coincidences <= attn.ac_ops - q_term


# --- reports and bad input --------------------------------------------------------------------------


def test_report_outputs(tiny: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = tiny
    report = measure_energy(model, [x])
    metrics = report.to_metrics()
    for key in ("energy_mJ", "acs_G", "macs_G", "dense_flops_G", "firing_rate_mean", "params"):
        assert isinstance(metrics[key], float)
    assert metrics["energy_mJ"] == report.energy_mj and metrics["params"] == sum(p.numel() for p in model.parameters())
    assert "firing_rate/blocks.1.mlp.hidden_lif" in metrics and "acs_G/blocks.0.attn" in metrics
    data = json.loads(report.to_json())
    assert data["totals"]["acs_G"] == pytest.approx(report.acs / GIGA)
    assert sum(row["energy_mJ"] for row in data["layers"] + data["attention"]) == pytest.approx(report.energy_mj)
    table = report.to_table()
    assert "| blocks.1.mlp.fc2.conv | Conv2d |" in table and f"{report.energy_mj:.4f} mJ" in table


def test_bad_batch_shape_raises_and_leaves_no_hooks(tiny: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = tiny
    with pytest.raises(ValueError, match=r"batch 1: .* expects inputs of shape \[B, 3, 16, 16\].*\[6, 3, 8, 8\]"):
        measure_energy(model, [x, torch.randn(6, 3, 8, 8)])
    with pytest.raises(ValueError, match="no batches"):
        measure_energy(model, [])
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())


# --- sfh energy -------------------------------------------------------------------------------------

CLI_MODEL = ["energy", "--model", "spikingformer_cifar_4_256", "--batch-size", "2", "--max-batches", "1", "--T", "1"]


def test_cli_synthetic_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*CLI_MODEL, "--data", "synthetic:4", "--format", "json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["model"] == "spikingformer_cifar_4_256" and data["images"] == 2
    assert data["totals"]["dense_flops_G"] == pytest.approx(1.6409 / 4, abs=1e-4)  # upstream's figure is at T=4
    assert "1/1" in out.err  # the progress bar


def test_cli_reads_a_cifar10_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar(tmp_path, "cifar10")  # real-format pickle batches, 6 test images
    args = ["energy", "--model", "spikingformer_cifar_4_256", "--T", "1", "--batch-size", "4", "--num-workers", "0"]
    assert main([*args, "--data", f"cifar10:{tmp_path}", "--format", "json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["images"] == 6 and 0 <= data["top1"] <= 1  # the whole test split, in two batches
    assert "'dataset': 'cifar10', 'split': 'eval'" in data["notes"][-1] and str(tmp_path) in data["notes"][-1]
    assert "2/2" in out.err

    assert main([*args, "--data", f"cifar10:{tmp_path / 'missing'}"]) == 2  # the data package's error
    assert "cifar10 data folder" in capsys.readouterr().err


def test_cli_model_and_data_must_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar(tmp_path, "cifar10")
    assert main(["energy", "--model", "spikingformer_dvs_2_256", "--data", f"cifar10:{tmp_path}"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and (
        "model spikingformer_dvs_2_256 takes event inputs [16, 2, 128, 128] in 11 classes, "
        "but --data cifar10 gives static inputs [3, 32, 32] in 10 classes" in out.err
    )
    assert main(["energy", "--model", "spikingformer_cifar_4_256", "--data", f"cifar100:{tmp_path}"]) == 2
    assert "in 100 classes; pass --num-classes 100" in capsys.readouterr().err


def test_cli_digits_top1_is_the_engines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A digits-recipe checkpoint folder: the 360-image test split, its model and preprocessing, as training."""
    short = {"schedule": {"epochs": 1, "cooldown_epochs": 0}, "data": {"max_train_batches": 3}}
    result = fit(TrainConfig.from_dict(deep_merge(load_recipe("digits"), short)), checkpoint_dir=tmp_path)
    args = ["energy", "--checkpoint", str(tmp_path), "--data", "digits", "--batch-size", "120", "--format", "json"]
    assert main(args) == 0  # no --model: the checkpoint's config names it, with the recipe's D 64, 1 block
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "spikingformer_cifar_2_384" and data["images"] == 360
    assert 100 * data["top1"] == pytest.approx(result.last_top1, rel=1e-12)


@pytest.mark.train
def test_cli_baseline_saving_under_both_conventions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.randn(4, 3, 32, 32)
    ckpt = {}
    for name in ("spikingformer_cifar_4_256", "spikformer_cifar_4_256"):
        ckpt[name] = tmp_path / f"{name}.pth"
        torch.save(lively(build_model(name, T=1), x).state_dict(), ckpt[name])
    data = ["--data", "synthetic:4", "--batch-size", "2", "--T", "1", "--format", "json"]

    def measured(*args: str) -> dict:
        assert main(["energy", *args, *data]) == 0
        return json.loads(capsys.readouterr().out)

    ours_args = ["--model", "spikingformer_cifar_4_256", "--checkpoint", str(ckpt["spikingformer_cifar_4_256"]),
                 "--baseline", "spikformer_cifar_4_256"]  # fmt: skip
    ours = measured(*ours_args, "--baseline-checkpoint", str(ckpt["spikformer_cifar_4_256"]))
    baseline = ours["baseline"]
    assert baseline["model"] == "spikformer_cifar_4_256" and ours["model"] == "spikingformer_cifar_4_256"
    assert [c["max_spike_count"] for c in baseline["conventions"]] == [1, 30]
    for convention in baseline["conventions"]:
        alone = measured("--model", "spikformer_cifar_4_256", "--checkpoint", str(ckpt["spikformer_cifar_4_256"]),
                         "--max-spike-count", str(convention["max_spike_count"]))  # fmt: skip
        assert convention["report"]["totals"] == pytest.approx(alone["totals"], rel=1e-12)
        saving = 1 - ours["totals"]["energy_mJ"] / alone["totals"]["energy_mJ"]
        assert convention["saving"] == pytest.approx(saving, rel=1e-12)
    as_mac, as_ac = (c["report"]["totals"] for c in baseline["conventions"])
    assert as_mac["macs_G"] > as_ac["macs_G"] and as_mac["energy_mJ"] > as_ac["energy_mJ"]  # spike sums: MAC vs AC

    assert main(["energy", *ours_args, *data[:-2]]) == 0  # table; a baseline with random weights
    table = capsys.readouterr().out
    assert "## Energy of spikingformer_cifar_4_256 vs spikformer_cifar_4_256 (the same 4 images)" in table
    assert "| common: Spikingformer's rules" in table and "| spike_counts: upstream's alternative" in table


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--data", "imagenet"], "--data imagenet needs its folder: --data imagenet:ROOT"),
        (["--data", "mnist:/x"], "unknown --data 'mnist:/x'; allowed: imagenet:ROOT, cifar10:ROOT"),
        (["--data", "synthetic:x"], "synthetic:N needs a whole number"),
        (["--checkpoint", "/nowhere.pth"], "no checkpoint at /nowhere.pth"),
    ],
)
def test_cli_bad_input(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*CLI_MODEL, *extra]) == 2
    out = capsys.readouterr()
    assert message in out.err and out.out == ""


def test_cli_checkpoint_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "other.pth"
    torch.save(build_model("spikingformer_cifar_4_256", num_classes=100).state_dict(), own)
    assert main([*CLI_MODEL, "--checkpoint", str(own)]) == 2
    out = capsys.readouterr()
    assert "does not fit the model: head.weight: checkpoint [100, 256], model [10, 256]" in out.err
    assert out.out == ""

    upstream = tmp_path / "upstream.pth"
    torch.save({"state_dict": {"patch_embed.proj_conv.weight": torch.zeros(1)}}, upstream)
    assert main([*CLI_MODEL, "--checkpoint", str(upstream)]) == 2
    out = capsys.readouterr()
    assert f"upstream checkpoint {upstream} does not fit Spikingformer" in out.err and out.out == ""


def test_cli_num_classes_gives_an_imagenet_checkpoint_a_new_head(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An ImageNet checkpoint (1000 classes) measured as a 10-class model: every weight but the classifier loads,
    the classifier is new (timm's ``reset_classifier``); without ``--num-classes`` the head must fit."""
    trained = build_model("spikingformer_8_384", T=1)
    path = tmp_path / "imagenet.pth"
    torch.save(trained.state_dict(), path)
    args = ["energy", "--model", "spikingformer_8_384", "--checkpoint", str(path), "--T", "1",
            "--data", "synthetic:2", "--batch-size", "2", "--format", "json"]
    assert main([*args, "--num-classes", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "spikingformer_8_384" and data["images"] == 2

    model = build_model("spikingformer_8_384", T=1, num_classes=10)
    load_weights(model, read_checkpoint(path), new_head=True)
    kept = {k: v for k, v in trained.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())
    assert model.head.weight.shape == (10, 384) and model.num_classes == 10
    with pytest.raises(ValueError, match=r"head.weight: checkpoint \[1000, 384\], model \[10, 384\]"):
        load_weights(build_model("spikingformer_8_384", T=1, num_classes=10), read_checkpoint(path))


def test_upstream_timm_checkpoint_loads(tmp_path: Path) -> None:
    """A timm-style upstream checkpoint (weights under ``state_dict``, plus the run's Namespace)."""
    layouts = json.loads((GOLDEN / "upstream_layouts.json").read_text())
    state = {key: torch.randn(shape) for key, shape in layouts["spikingformer_cifar_4_384"]["state_dict"].items()}
    path = tmp_path / "checkpoint-284.pth.tar"
    torch.save({"epoch": 284, "state_dict": state, "args": argparse.Namespace(model="spikformer")}, path)
    model = build_model("spikingformer_cifar_4_384")
    load_weights(model, read_checkpoint(path))
    assert torch.equal(model.head.weight, state["head.weight"])
