"""The Spike-driven Transformer v1 family: exact parameter counts, upstream checkpoint import, and what its
recipes need (LAMB, TET loss, CIFAR10-DVS frames at 64x64). That it computes what upstream computes (logits, every
gradient, spikes; the MLP at every ratio; TET) is ``test_golden.py``'s part, on fixtures made by the upstream code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.golden import GOLDEN, load
from timm.loss import LabelSmoothingCrossEntropy
from torch import nn

from spikingformer import build_model, load_upstream_state_dict
from spikingformer._validation import ConfigError
from spikingformer.config import AugmentConfig, TrainConfig
from spikingformer.data.dvs_augment import ResizedFrames, frames_to_tensor
from spikingformer.energy.measure import measure_conventions
from spikingformer.recipes import load_recipe
from spikingformer.training.epoch import build_criterion
from spikingformer.training.optim import build_optimizer

#: The upstream code's count less ``talking_heads`` (8 x 8 per block), per registered configuration.
PARAMS = {
    ("sdt_8_384", ()): 16_816_024,
    ("sdt_6_512", ()): 23_373_352,
    ("sdt_8_512", ()): 29_689_384,
    ("sdt_10_512", ()): 36_005_416,
    ("sdt_8_768", ()): 66_338_632,
    ("sdt_cifar_2_512", ()): 10_233_418,
    ("sdt_cifar_2_512", (("num_classes", 100),)): 10_279_588,
    ("sdt_dvs_2_256", ()): 2_566_923,
    ("sdt_cifar10dvs_2_256", ()): 2_566_666,
}


@pytest.mark.parametrize(("name", "overrides"), PARAMS)
def test_parameter_count_is_upstream_less_talking_heads(name: str, overrides: tuple) -> None:
    with torch.device("meta"):
        model = build_model(name, **dict(overrides))
    assert sum(p.numel() for p in model.parameters()) == PARAMS[(name, overrides)]


def test_cifar10_dvs_takes_64x64_frames_and_gesture_128() -> None:
    with torch.device("meta"):
        c10dvs, gesture = build_model("sdt_cifar10dvs_2_256"), build_model("sdt_dvs_2_256")
    assert c10dvs.input_shape == (16, 2, 64, 64) and c10dvs.input_kind == "event"
    assert gesture.input_shape == (16, 2, 128, 128) and gesture.input_kind == "event"


# ---------------------------------------------------------------- upstream checkpoints


def upstream_8_384() -> dict[str, torch.Tensor]:
    """A random state dict in the layout of upstream's 8-384 (read off its model file, ``upstream_layouts.json``)."""
    layout = json.loads((GOLDEN / "upstream_layouts.json").read_text())["sdt_8_384"]
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randint(1, 100, shape, generator=generator) if k.endswith("num_batches_tracked")
            else torch.randn(shape, generator=generator) for k, shape in layout["state_dict"].items()}


def test_full_size_upstream_state_dict_loads_and_drops_talking_heads() -> None:
    state = upstream_8_384()
    upstream_count = json.loads((GOLDEN / "upstream_layouts.json").read_text())["sdt_8_384"]["parameters"]
    assert upstream_count == 16_816_536  # the upstream code's own count
    model = build_model("sdt_8_384")
    load_upstream_state_dict(model, {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 299})
    ours = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) + model.upstream_unused_params() == upstream_count
    dropped = [k for k in state if "talking_heads" in k]
    assert len(dropped) == 8 and len(ours) == len(state) - len(dropped)
    assert torch.equal(ours["tokenizer.feat.bn.running_mean"], state["patch_embed.proj_bn3.running_mean"])
    assert torch.equal(ours["blocks.7.mlp.fc2.conv.bias"], state["block.7.mlp.fc2_conv.bias"])


def load_error(state: dict) -> str:
    with pytest.raises(ValueError) as err:
        load_upstream_state_dict(build_model("sdt_8_384"), state)
    return str(err.value)


def test_strict_loading_names_the_key() -> None:
    state = upstream_8_384()
    assert "'block.0.attn.extra.weight'" in load_error({**state, "block.0.attn.extra.weight": torch.zeros(1)})
    missing = dict(state)
    del missing["block.3.attn.k_bn.running_var"]
    assert "blocks.3.attn.k.bn.running_var" in load_error(missing)
    assert "[10, 384]" in load_error({**state, "head.weight": torch.zeros(10, 384)})


def test_tet_returns_per_step_logits_in_training_and_their_mean_in_eval() -> None:
    golden = load("sdt_cifar10dvs")
    ours, x = golden.model(), golden.input
    assert ours.tet
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), golden.tensors["logits_eval"], rtol=0, atol=1e-5)
        assert ours.train()(x).shape == (10, 2, 10)  # [T, B, classes]


# ---------------------------------------------------------------- the recipes SDT trained with


def test_tet_loss_is_upstreams_formula() -> None:
    """``(1 - lamb) * mean_t CE_smooth(logits[t]) + lamb * MSE(logits, means)`` (upstream criterion.py)."""
    aug = AugmentConfig(smoothing=0.1, tet_lamb=0.001, tet_means=1.0)
    criterion, mixup = build_criterion(aug, num_classes=10)
    logits, target = torch.randn(4, 3, 10), torch.tensor([1, 7, 3])
    smooth = LabelSmoothingCrossEntropy(0.1)
    expected = 0.999 * sum(smooth(logits[t], target) for t in range(4)) / 4 + 0.001 * ((logits - 1) ** 2).mean()
    assert mixup is None
    torch.testing.assert_close(criterion(logits, target), expected)
    with pytest.raises(ValueError, match="tet=True"):
        criterion(logits.mean(0), target)


def test_tet_needs_a_per_step_model_and_the_other_way_round() -> None:
    recipe = load_recipe("sdt-cifar10-dvs")
    assert TrainConfig.from_dict(recipe).augment.tet_lamb == 0.001
    recipe["model"]["kwargs"]["tet"] = False
    with pytest.raises(ConfigError, match="augment.tet_lamb=0.001 and model.kwargs.tet=False"):
        TrainConfig.from_dict(recipe)


def test_imagenet_recipes_are_the_per_config_upstream_settings() -> None:
    """conf/imagenet/*.yml: LAMB through timm's factory, cutmix/mixup switching, per-config batch/lr/aug."""
    rows = {name: TrainConfig.from_dict(load_recipe(f"sdt-imagenet-{name}")) for name in
            ("8-384", "6-512", "8-512", "10-512", "8-768")}
    table = {name: (c.data.batch_size, c.optim.lr, c.schedule.min_lr, c.augment.auto_augment, c.augment.scale,
                    c.augment.mixup_prob) for name, c in rows.items()}
    assert table == {
        "8-384": (48, 1.5e-3, 1.5e-5, "rand-m5-mstd0.5-inc1", (0.2, 1.0), 0.6),
        "8-512": (48, 1.5e-3, 1.5e-5, "rand-m5-mstd0.5-inc1", (0.2, 1.0), 0.6),
        "6-512": (48, 1e-3, 2e-5, "rand-m7-mstd0.5-inc1", (0.08, 1.0), 0.6),
        "10-512": (36, 1e-3, 2e-5, "rand-m7-mstd0.5-inc1", (0.2, 1.0), 0.75),
        "8-768": (36, 1e-3, 2e-5, "rand-m7-mstd0.5-inc1", (0.08, 1.0), 1.0),
    }
    config = rows["8-384"]
    assert (config.augment.mixup_alpha, config.augment.cutmix_alpha, config.augment.mixup_switch_prob) == (0.2, 1, 0.5)
    optimizer = build_optimizer(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), config.optim, config.optim.lr)
    assert type(optimizer).__name__ == "Lamb" and optimizer.defaults["eps"] == 1e-6
    assert sorted(group["weight_decay"] for group in optimizer.param_groups) == [0.0, 0.01]  # 1-D params: none


def test_cifar10_dvs_frames_are_resized_to_64_as_upstream() -> None:
    """torchvision's bilinear Resize without antialiasing, 128 -> 64: the mean of each 2x2 block."""
    frames = np.random.default_rng(0).integers(0, 5, (3, 2, 128, 128)).astype(np.float32)
    resized = ResizedFrames(64, frames_to_tensor)(frames)
    torch.testing.assert_close(resized, F.avg_pool2d(torch.from_numpy(frames), 2), rtol=0, atol=0)


# ---------------------------------------------------------------- energy


def test_energy_under_the_paper_and_the_common_convention() -> None:
    """Only the first conv reads analog values (MACs, per step); every other layer, the head included, reads
    spikes (ACs); SDSA is costed by its own kind. SDT's paper convention is the common ruler's, and says it
    cannot be recomputed from the upstream code."""
    golden = load("sdt_cifar")
    ours, x, width = golden.model().eval(), golden.input, golden.entry["kwargs"]["embed_dim"]
    conventions = type(ours).energy_conventions()
    assert "NOT recomputable" in conventions["paper"].description
    paper, common = measure_conventions(ours, [x], [conventions["paper"], conventions["common"]])
    first, *rest = paper.layers
    assert first.name == "tokenizer.stages.0.conv_bn.conv" and first.mac_ops == first.dense_ops > 0
    assert all(layer.mac_ops == 0 and layer.ac_ops > 0 for layer in rest), [l.name for l in rest if l.mac_ops]
    assert rest[-1].name == "head"
    assert [(a.name, a.kind) for a in paper.attention] == [("blocks.0.attn", "sdsa"), ("blocks.1.attn", "sdsa")]
    sdsa = paper.attention[0]
    assert (sdsa.time_steps, sdsa.tokens, sdsa.heads * sdsa.head_dim) == (4, 8 * 8, width)
    assert sdsa.ac_ops == pytest.approx(sdsa.dense_ops / 2 * (min(sdsa.rate_k, sdsa.rate_v) + sdsa.rate_q))
    assert paper.energy_mj == common.energy_mj > 0


def test_the_imagenet_table_trains_each_row_with_its_own_conf() -> None:
    """A row names its recipe (harness Row.recipe): each SDT ImageNet conf differs in batch, lr and augmentation."""
    from harness.experiment import load_experiment

    table = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "sdt-imagenet.yaml")
    configs = {row.id: table.train_config(row) for row in table.rows}
    assert (configs["10-512"].data.batch_size, configs["10-512"].augment.mixup_prob) == (36, 0.75)
    assert (configs["6-512"].optim.lr, configs["6-512"].augment.scale) == (1e-3, (0.08, 1.0))
    assert (configs["8-512-T1"].model.kwargs["T"], configs["8-512-T1"].optim.lr) == (1, 1.5e-3)


def test_sfh_energy_says_the_paper_figure_cannot_be_recomputed(capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    args = ["energy", "--model", "sdt_cifar10dvs_2_256", "--T", "1", "--max-batches", "1", "--batch-size", "1",
            "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "- convention: paper" in out and "- counting: paper: SDT's supplementary" in out
    assert "NOT recomputable from upstream code" in out and "| blocks.1.attn | SDSA h=8 N=256 d=32 |" in out
