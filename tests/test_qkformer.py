"""QKFormer: the upstream code's exact parameter counts and checkpoint layouts, strict import of upstream checkpoint
files, the batch-coupled neuron, and energy under both conventions.

The full-size layouts (key -> shape, parameter count) were read off the upstream model files by
``tests/golden/make_golden.py`` (``tests/golden/upstream_layouts.json``); that the imported weights compute what
upstream computes, in eval and in training, is ``test_golden.py``'s part.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import timm
import torch
from helpers.golden import GOLDEN, load

from spikingformer import build_model
from spikingformer.checkpoints.loading import load_weights, read_checkpoint
from spikingformer.checkpoints.upstream import convert_upstream_state_dict, load_upstream_state_dict
from spikingformer.energy import measure_conventions
from spikingformer.models import batch_coupling
from spikingformer.models.qkformer import PROJ_LIF_OVER_TB, QKFormer

LAYOUTS = json.loads((GOLDEN / "upstream_layouts.json").read_text())
#: layout in upstream_layouts.json -> our registered model with its overrides
REGISTERED = {
    "qkformer_10_384": ("qkformer_10_384", {}),
    "qkformer_10_512": ("qkformer_10_512", {}),
    "qkformer_10_768": ("qkformer_10_768", {}),
    "qkformer_cifar_4_384": ("qkformer_cifar_4_384", {}),
    "qkformer_cifar_4_384-100": ("qkformer_cifar_4_384", {"num_classes": 100}),
    "qkformer_cifar10dvs_2_256": ("qkformer_cifar10dvs_2_256", {}),
    "qkformer_dvs_2_256": ("qkformer_dvs_2_256", {}),
}


@pytest.mark.parametrize("layout", REGISTERED)
def test_parameters_and_checkpoint_layout_are_the_upstream_code(layout: str) -> None:
    name, overrides = REGISTERED[layout]
    upstream = LAYOUTS[layout]
    with torch.device("meta"):
        ours = build_model(name, **overrides)
        checkpoint = {k: torch.empty(shape, device="meta") for k, shape in upstream["state_dict"].items()}
    assert sum(p.numel() for p in ours.parameters()) == upstream["parameters"]
    # every upstream tensor maps onto one of ours with its shape (names and shapes only: meta tensors)
    assert convert_upstream_state_dict(ours, checkpoint).keys() == ours.state_dict().keys()


def test_imagenet_checkpoint_layout() -> None:
    """434 tensors, named as ``imagenet/qkformer.py`` names them."""
    keys = list(LAYOUTS["qkformer_10_384"]["state_dict"])
    assert len(keys) == 434
    patterns = [
        r"patch_embed1\.proj(|1|2)_(conv|bn)\.",
        r"patch_embed1\.proj_res_(conv|bn)\.",
        r"stage1\.0\.tssa\.(q|k|proj)_(conv|bn)\.",
        r"stage[12]\.\d\.mlp\.fc[12]_(conv|bn)\.",
        r"stage2\.[01]\.tssa\.(q|k|proj)_(conv|bn)\.",
        r"patch_embed[23]\.proj[34]_(conv|bn)\.",
        r"patch_embed[23]\.proj_res_(conv|bn)\.",
        r"stage3\.[0-6]\.attn\.(q|k|v|proj)_(conv|bn)\.",
        r"stage3\.[0-6]\.mlp\.fc[12]_(conv|bn)\.",
        r"head\.",
    ]
    assert [k for k in keys if not any(re.match(p, k) for p in patterns)] == []


# ---------------------------------------------------------------- the batch-coupled neuron


def test_each_sample_depends_on_the_rest_of_its_batch() -> None:
    """Upstream's last-stage ``proj_lif`` steps t0b0, t0b1, t1b0, t1b1: a sample's membrane comes from the sample
    before it, the first sample's (from step 1 on) from the batch's last. Alone, each gets other logits; the
    per-sample neuron gives every sample its own logits whatever its batch, the coupled one's at batch 1."""
    golden = load("qkformer_cifar")
    x = golden.input
    coupled, per_sample = golden.model().eval(), golden.model(batch_coupled_proj_lif=False).eval()
    with torch.no_grad():
        together, alone = coupled(x), torch.cat([coupled(x[:1]), coupled(x[1:])])
        assert not torch.allclose(together[0], alone[0], atol=1e-4)
        assert not torch.allclose(together[1], alone[1], atol=1e-4)
        torch.testing.assert_close(per_sample(x), alone, rtol=0, atol=1e-6)


def test_the_family_declares_its_batch_coupling() -> None:
    assert batch_coupling("qkformer_cifar_4_384") == PROJ_LIF_OVER_TB
    assert batch_coupling("qkformer_10_768", batch_coupled_proj_lif=False) is None
    assert batch_coupling("spikingformer_cifar_4_384") is None and batch_coupling("sdt_8_384") is None


# ---------------------------------------------------------------- upstream checkpoint files


def upstream_training_file(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A ``misc.save_model`` file: ``{model, optimizer, epoch, scaler, args}``."""
    params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if k.endswith("weight")]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    args = argparse.Namespace(model="QKFormer_10_384", time_step=4, blr=6e-4, accum_iter=2, epochs=200)
    torch.save({"model": state, "optimizer": optimizer.state_dict(), "epoch": 199, "scaler": scaler.state_dict(),
                "args": args}, path)
    return path


def test_upstream_training_checkpoint_file_loads(tmp_path: Path) -> None:
    golden = load("qkformer_imagenet")
    file = upstream_training_file(golden.under("state"), tmp_path / "checkpoint-199.pth")
    fresh = build_model(golden.entry["model"], **golden.entry["kwargs"])
    load_weights(fresh, read_checkpoint(file))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(golden.input), golden.tensors["logits_eval"], rtol=0, atol=1e-5)


def test_upstream_checkpoint_through_timm_pretrained_path(tmp_path: Path) -> None:
    golden = load("qkformer_cifar")
    file = upstream_training_file(golden.under("state"), tmp_path / "checkpoint-399.pth")
    model = timm.create_model(golden.entry["model"], pretrained=True, pretrained_cfg_overlay=dict(file=str(file)),
                              **golden.entry["kwargs"])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(golden.input), golden.tensors["logits_eval"], rtol=0, atol=1e-5)


def test_wrong_layout_checkpoint_is_refused() -> None:
    """A CIFAR checkpoint (``mlp1_conv``, ``ssa``, no stem pooling) does not load into the ImageNet layout."""
    ours = QKFormer(layout="imagenet", embed_dim=32, num_heads=4, num_classes=10, img_size=64, depth=4)
    with pytest.raises(ValueError, match="stage1.0.mlp.mlp1_conv.weight"):
        load_upstream_state_dict(ours, load("qkformer_cifar").under("state"))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(layout="dvs", embed_dim=248, num_heads=8, img_size=128, in_chans=2, depth=2), "multiple of 16"),
        (dict(layout="cifar", embed_dim=384, num_heads=64, depth=4), "D/4 = 96 channel stage is not divisible"),
        (dict(layout="imagenet", embed_dim=384, num_heads=6, depth=3, img_size=224), "depth=3"),
        (dict(layout="imagenet", embed_dim=384, num_heads=6, depth=10, img_size=200), "divisible by 16"),
    ],
)
def test_impossible_configurations_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QKFormer(**kwargs)


# ---------------------------------------------------------------- energy under the paper's and the common convention


def test_energy_paper_and_common_conventions() -> None:
    """Paper: first conv once per image, integer spike counts as ACs by value; common: per step, counts as MACs."""
    golden = load("qkformer_cifar")
    ours, x, width = golden.model().eval(), golden.input, golden.entry["kwargs"]["embed_dim"]
    conventions = type(ours).energy_conventions()
    paper, common = measure_conventions(ours, [x], [conventions["paper"], conventions["common"]])
    first_paper, first_common = paper.layers[0], common.layers[0]
    assert first_paper.name == first_common.name == "tokenizer.units.0.conv_bn.conv"
    assert first_paper.mac_ops == pytest.approx(first_common.mac_ops / ours.T) and first_common.mac_ops > 0
    # the downsampling shortcut reads the residual stream: integer spike counts (values up to 2 + 2 x blocks)
    shortcut = "blocks.1.downsample.shortcut.conv_bn.conv"
    on_paper, on_common = (next(layer for layer in r.layers if layer.name == shortcut) for r in (paper, common))
    assert on_common.mac_ops == on_common.dense_ops and on_common.ac_ops == 0
    assert on_paper.mac_ops == 0 and 0 < on_paper.ac_ops
    # Q-K token attention in the first two stages, SSA in the last, each costed by its own kind
    kinds = [(a.name, a.kind) for a in paper.attention]
    assert kinds == [("blocks.0.0.attn", "qk_token"), ("blocks.1.0.attn", "qk_token"), ("blocks.2.0.attn", "ssa")]
    token = paper.attention[0]
    assert (token.time_steps, token.tokens, token.heads * token.head_dim) == (4, 32 * 32, width // 4)
    assert token.dense_ops == 2 * 4 * 32 * 32 * (width // 4)
    assert token.ac_ops == pytest.approx(token.dense_ops / 2 * (token.rate_q + token.rate_k)) and token.ac_ops > 0
    assert paper.energy_mj < common.energy_mj
