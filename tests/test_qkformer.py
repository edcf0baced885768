"""QKFormer: the upstream code's exact parameter counts, strict import of upstream checkpoints, and forward and
backward equal to an independent transcription of the upstream networks (``upstream_qkformer_reference.py``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import timm
import torch
import upstream_qkformer_reference as ref
from spikingjelly.activation_based import neuron
from torch import nn
from upstream_reference import randomize_

from spikingformer import build_model
from spikingformer.checkpoints.loading import load_weights, read_checkpoint
from spikingformer.checkpoints.upstream import convert_upstream_state_dict, load_upstream_state_dict
from spikingformer.energy import measure_conventions
from spikingformer.models.qkformer import QKFormer

#: (registered name, overrides) -> (upstream layout, the upstream builder's arguments, upstream parameter count)
REGISTERED = {
    ("qkformer_10_384", ()): ("imagenet", dict(embed_dims=384, num_heads=6, depths=10, mlp_ratio=4), 16_473_688),
    ("qkformer_10_512", ()): ("imagenet", dict(embed_dims=512, num_heads=8, depths=10, mlp_ratio=4), 29_079_336),
    ("qkformer_10_768", ()): ("imagenet", dict(embed_dims=768, num_heads=12, depths=10, mlp_ratio=4), 64_962_760),
    ("qkformer_cifar_4_384", ()): ("cifar", dict(embed_dims=384, num_heads=8, depths=4, mlp_ratio=4), 6_706_234),
    ("qkformer_cifar_4_384", (("num_classes", 100),)): (
        "cifar",
        dict(embed_dims=384, num_heads=8, depths=4, mlp_ratio=4, num_classes=100),
        6_740_884,
    ),
    ("qkformer_cifar10dvs_2_256", ()): ("dvs", dict(embed_dims=256, num_heads=16, depths=2, mlp_ratio=1), 1_504_138),
    ("qkformer_dvs_2_256", ()): (
        "dvs",
        dict(embed_dims=256, num_heads=16, depths=2, mlp_ratio=4, num_classes=11),
        1_999_371,
    ),
}
UPSTREAM_DEFAULTS = {
    "imagenet": dict(num_classes=1000, T=4),
    "cifar": dict(num_classes=10, T=4),
    "dvs": dict(num_classes=10, T=16),
}
IN_CHANNELS = {"imagenet": 3, "cifar": 3, "dvs": 2}


def upstream_twin(layout: str, args: dict) -> ref.UpstreamQKFormer:
    return ref.UpstreamQKFormer(layout, in_channels=IN_CHANNELS[layout], **{**UPSTREAM_DEFAULTS[layout], **args})


@pytest.mark.parametrize("name,overrides", REGISTERED, ids=[f"{n}{dict(o) or ''}" for n, o in REGISTERED])
def test_parameter_count_equals_the_upstream_code(name: str, overrides: tuple) -> None:
    layout, args, count = REGISTERED[name, overrides]
    with torch.device("meta"):
        ours = build_model(name, **dict(overrides))
        upstream = upstream_twin(layout, args)
    assert sum(p.numel() for p in ours.parameters()) == count
    assert sum(p.numel() for p in upstream.parameters()) == count
    # every upstream tensor maps onto one of ours with its shape (names and shapes only: meta tensors)
    converted = convert_upstream_state_dict(ours, upstream.state_dict())
    assert converted.keys() == ours.state_dict().keys()


def test_imagenet_checkpoint_layout() -> None:
    """434 tensors named as PEERS.md (c) lists them for ``imagenet/qkformer.py``."""
    with torch.device("meta"):
        keys = list(upstream_twin("imagenet", dict(embed_dims=384, num_heads=6, depths=10, mlp_ratio=4)).state_dict())
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


# ---------------------------------------------------------------- numerical equivalence on small twins

D, HEADS = 64, 4
#: Added to the SSA's Q/K/V BN biases of the small twins (firing rates then 0.07-0.73 in every LIF layer).
SSA_BIAS_SHIFT = 0.7

#: layout -> (upstream builder args, our constructor args, one sample's shape)
SMALL = {
    "imagenet": (dict(depths=4, mlp_ratio=4.0, T=4), dict(img_size=64, depth=4, T=4), (3, 64, 64)),
    "cifar": (dict(depths=3, mlp_ratio=4.0, T=4), dict(img_size=32, depth=3, T=4), (3, 32, 32)),
    "dvs": (
        dict(depths=2, mlp_ratio=1.0, T=4),
        dict(img_size=64, in_chans=2, depth=2, mlp_ratio=1.0, T=4, tau=2.0),
        (4, 2, 64, 64),
    ),
}


def small_pair(layout: str) -> tuple[nn.Module, QKFormer, torch.Tensor]:
    """A random upstream twin with BN statistics calibrated on the test batch, and ours loaded from it."""
    up_args, our_args, sample = SMALL[layout]
    generator = torch.Generator().manual_seed(3)
    if layout == "dvs":  # event counts
        x = torch.randint(0, 4, (2, *sample), generator=generator).float()
    else:
        x = torch.randn((2, *sample), generator=generator)
    upstream = upstream_twin(layout, dict(embed_dims=D, num_heads=HEADS, num_classes=10, **up_args))
    randomize_(upstream, x, generator)
    with torch.no_grad():  # 16-64 tokens, not 196: lift Q, K, V rates so the SSA's attention LIF fires
        for module in upstream.modules():
            if isinstance(module, ref.Spiking_Self_Attention):
                for name in "qkv":
                    getattr(module, f"{name}_bn").bias.add_(SSA_BIAS_SHIFT)
    ours = QKFormer(layout=layout, embed_dim=D, num_heads=HEADS, num_classes=10, **our_args)
    load_upstream_state_dict(ours, upstream.state_dict())
    return upstream, ours.eval(), x


def firing_rates(nets: list[nn.Module]) -> tuple[list[float], list]:
    """Hooks recording the mean output of every LIF layer of ``nets``."""
    rates: list[float] = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: rates.append(out.mean().item()))
        for net in nets
        for m in net.modules()
        if isinstance(m, neuron.BaseNode)
    ]
    return rates, hooks


@pytest.mark.parametrize("layout", SMALL)
def test_eval_logits_equal_the_upstream_forward(layout: str) -> None:
    upstream, ours, x = small_pair(layout)
    rates, hooks = firing_rates([upstream, ours])
    with torch.no_grad():
        expected, got = upstream(x), ours(x)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    lifs = sum(isinstance(m, neuron.BaseNode) for m in ours.modules())
    assert len(rates) == 2 * lifs and all(0.0 < r < 1.0 for r in rates), f"a silent or saturated LIF: {rates}"
    assert not torch.allclose(expected[0], expected[1]), "logits do not depend on the input"


@pytest.mark.parametrize("layout", SMALL)
def test_train_mode_gradients_equal_the_upstream(layout: str) -> None:
    """Batch statistics over T*B and surrogate gradients: every parameter's gradient within 1e-4 relative."""
    upstream, ours, x = small_pair(layout)
    weights = torch.randn(2, 10, generator=torch.Generator().manual_seed(5))
    rates, hooks = firing_rates([upstream, ours])
    expected, got = upstream.train()(x), ours.train()(x)
    for hook in hooks:
        hook.remove()
    assert all(0.0 < r < 1.0 for r in rates), f"a silent or saturated LIF: {rates}"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    # upstream's gradients under upstream names (buffers as they are), renamed into ours by the importer
    params = dict(upstream.named_parameters())
    grads = {k: params[k].grad if k in params else v for k, v in upstream.state_dict().items()}
    expected_grads = convert_upstream_state_dict(ours, grads)
    largest = max(expected_grads[name].norm() for name, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        reference = expected_grads[name]
        if name.endswith("conv.bias"):  # a bias before a train-mode BN: its exact gradient is 0, both are noise
            assert max(p.grad.norm(), reference.norm()) <= 1e-6 * largest, name
            continue
        assert reference.norm() > 1e-6 * largest, f"no gradient reaches {name}"
        relative = (p.grad - reference).norm() / reference.norm()
        assert relative <= 1e-4, f"{name}: gradient differs by {relative:.2e} (relative)"


def upstream_training_file(upstream: nn.Module, path: Path) -> Path:
    """A ``misc.save_model`` file: ``{model, optimizer, epoch, scaler, args}``."""
    optimizer = torch.optim.AdamW(upstream.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    args = argparse.Namespace(model="QKFormer_10_384", time_step=4, blr=6e-4, accum_iter=2, epochs=200)
    torch.save(
        {
            "model": upstream.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": 199,
            "scaler": scaler.state_dict(),
            "args": args,
        },
        path,
    )
    return path


def test_upstream_training_checkpoint_file_loads(tmp_path: Path) -> None:
    upstream, ours, x = small_pair("imagenet")
    file = upstream_training_file(upstream, tmp_path / "checkpoint-199.pth")
    fresh = QKFormer(layout="imagenet", embed_dim=D, num_heads=HEADS, num_classes=10, **SMALL["imagenet"][1])
    load_weights(fresh, read_checkpoint(file))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), upstream(x), rtol=0, atol=1e-5)


def test_upstream_checkpoint_through_timm_pretrained_path(tmp_path: Path) -> None:
    upstream, _, x = small_pair("cifar")
    file = upstream_training_file(upstream, tmp_path / "checkpoint-399.pth")
    model = timm.create_model(
        "qkformer_cifar_4_384",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(file)),
        embed_dim=D,
        num_heads=HEADS,
        depth=3,
    )
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), upstream(x), rtol=0, atol=1e-5)


def test_wrong_layout_checkpoint_is_refused() -> None:
    """A CIFAR checkpoint (``mlp1_conv``, ``ssa``, no stem pooling) does not load into the ImageNet layout."""
    upstream, _, _ = small_pair("cifar")
    ours = QKFormer(layout="imagenet", embed_dim=D, num_heads=HEADS, num_classes=10, img_size=64, depth=4)
    with pytest.raises(ValueError, match="stage1.0.mlp.mlp1_conv.weight"):
        load_upstream_state_dict(ours, upstream.state_dict())


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
    _, ours, x = small_pair("cifar")
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
    assert (token.time_steps, token.tokens, token.heads * token.head_dim) == (4, 32 * 32, D // 4)
    assert token.dense_ops == 2 * 4 * 32 * 32 * (D // 4)
    assert token.ac_ops == pytest.approx(token.dense_ops / 2 * (token.rate_q + token.rate_k)) and token.ac_ops > 0
    assert paper.energy_mj < common.energy_mj
