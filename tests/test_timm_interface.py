"""timm's model interface on the shared base class, beyond what timm's own tests check.

timm's ``tests/test_models.py`` (``tests/timm_models/``) checks shapes and the API contract; these check the
numbers: gradient checkpointing gives the same gradients, the readout paths agree with ``forward``, a
transfer head trains, and every LIF fires in the models they run.
"""

from __future__ import annotations

import pytest
import timm
import torch
from helpers.spikes import firing_rates, lively

from spikingformer import Spikformer, Spikingformer

TINY = dict(embed_dim=64, depth=2, num_heads=4, T=3)


@pytest.mark.parametrize("family", [Spikingformer, Spikformer])
def test_grad_checkpointing_gives_the_same_gradients(family: type) -> None:
    """Each checkpointed block recomputes from resting neurons: same spikes, same gradients, same drop-path draw."""
    x = torch.randn(4, 3, 32, 32)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = lively(family(**TINY, drop_path_rate=0.3), x).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)
        loss = model(x).square().mean()
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=0, msg=name)
    rates = firing_rates(model.eval(), x)
    assert all(0.0 < rate < 1.0 for rate in rates), rates


@pytest.mark.parametrize("family", [Spikingformer, Spikformer])
def test_readout_paths_agree(family: type) -> None:
    """forward == forward_head(forward_features); num_classes=0 gives the pre-logits; '' gives feature maps."""
    x = torch.randn(2, 3, 32, 32)
    model = lively(family(**TINY), x)
    rates = firing_rates(model, x)
    assert all(0.0 < rate < 1.0 for rate in rates), rates
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model.forward_head(features), logits, rtol=0, atol=1e-6)
        assert features.shape == (2, 64, 8, 8) and pre_logits.shape == (2, 64)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre_logits, rtol=0, atol=1e-6)
        model.reset_classifier(0, "")
        torch.testing.assert_close(model(x), features, rtol=0, atol=0)
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, features, rtol=0, atol=0)
        assert [tuple(t.shape) for t in taps] == [(2, 64, 8, 8)] * 3


def test_reset_classifier_trains_a_new_head() -> None:
    """Transfer: a 10-class head on a 100-class model keeps every other weight and gets gradients."""
    model = timm.create_model("spikingformer_cifar_2_384", num_classes=100, **TINY).eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    model.reset_classifier(10)
    assert model.num_classes == 10 and model.get_classifier().out_features == 10
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_features_only_gives_the_last_three_taps() -> None:
    model = timm.create_model("spikformer_cifar_4_256", features_only=True, **TINY).eval()
    assert model.feature_info.channels() == [64, 64, 64] and model.feature_info.reduction() == [4, 4, 4]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 8, 8)] * 3


def test_event_model_takes_event_frames_and_single_frames() -> None:
    """[B, T, C, H, W] events, or one [B, C, H, W] frame repeated over T (what timm's tests feed)."""
    model = Spikingformer(layout="dvs", img_size=64, in_chans=2, num_classes=11, **TINY).eval()
    frame = torch.rand(2, 2, 64, 64)
    with torch.no_grad():
        repeated = model(frame.unsqueeze(1).expand(2, 3, 2, 64, 64))
        torch.testing.assert_close(model(frame), repeated, rtol=0, atol=0)


def test_optimizer_factory_reads_the_interface() -> None:
    """timm's optimizer factory: layer-wise decay groups from group_matcher, no decay on 1-D parameters."""
    from timm.optim import create_optimizer_v2

    model = Spikingformer(**TINY)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scales = {group["lr_scale"] for group in optimizer.param_groups}
    assert len(scales) == 4  # tokenizer, block 0, block 1, head
    for group in optimizer.param_groups:
        if group["weight_decay"]:
            assert all(p.ndim > 1 for p in group["params"])
