"""BN folding and the inference copy: same outputs as the unfolded eval model, original left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab.models import build_model
from resnetlab.models.resnet import ResNet
from resnetlab.weights.folding import fold_bn, fold_conv_bn, optimize_for_inference, relative_error

TOLERANCE = 1e-4  # relative, as issue #6 asks of the folded model

# (name, overrides, input size): CIFAR and ImageNet nets, plain and residual, options A/B/C, preact.
# ImageNet nets run on small inputs and with narrow widths to stay fast; their structure is unchanged.
_NARROW = {"widths": (8, 16, 32, 64), "num_classes": 20}
CASES = [
    ("resnet20", {}, 32),
    ("plain20", {}, 32),
    ("resnet20", {"shortcut": "B"}, 32),
    ("resnet20", {"shortcut": "C"}, 32),
    ("resnet20", {"preact": True}, 32),
    ("resnet18", _NARROW, 64),
    ("plain18", _NARROW, 64),
    ("resnet34", {**_NARROW, "shortcut": "A"}, 64),
    ("resnet50", _NARROW, 64),
    ("resnet50", {**_NARROW, "shortcut": "C", "bottleneck_stride": "3x3"}, 64),
    ("resnet50", {**_NARROW, "preact": True}, 64),
]


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters, so folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))


def _bn_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _net(name: str, overrides: dict) -> ResNet:
    torch.manual_seed(0)
    model = build_model(name, **overrides)
    _randomize_bn(model)
    return model


@pytest.mark.parametrize(("name", "overrides", "size"), CASES)
def test_folded_model_matches_unfolded(name: str, overrides: dict, size: int) -> None:
    model = _net(name, overrides).eval()
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x)
        folded = fold_bn(model)
        out = folded(x)
    assert relative_error(out, reference) < TOLERANCE
    # Only the BNs that precede a conv (pre-activation bn0 and the final BN) may remain.
    kept = sum(1 for b in model.blocks() if b.bn0 is not None) + (model.bn_final is not None)
    assert _bn_count(folded) == kept
    assert _bn_count(model) > kept


def test_folding_leaves_the_original_untouched() -> None:
    model = _net("resnet20", {"shortcut": "B"}).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_bn(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    assert model.conv1.bias is None
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_optimized_model_is_channels_last_eval_and_matches() -> None:
    model = _net("resnet20", {}).eval()
    fast = optimize_for_inference(model, channels_last=True)
    assert not fast.training
    assert all(not p.requires_grad for p in fast.parameters())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = fast(x.contiguous(memory_format=torch.channels_last))
        reference = model(x)
    assert relative_error(out, reference) < TOLERANCE


def test_folding_a_conv_with_bias_keeps_the_bias() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5)
    _randomize_bn(bn)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        reference = bn.eval()(conv(x))
        fold_conv_bn(conv, bn)
        assert relative_error(conv(x), reference) < TOLERANCE


def test_folding_rejects_bn_without_running_stats() -> None:
    conv, bn = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(ValueError, match="running statistics"):
        fold_conv_bn(conv, bn)


def test_relative_error_scales_by_the_reference() -> None:
    reference = torch.tensor([100.0, -200.0])
    assert relative_error(reference + torch.tensor([0.0, 2.0]), reference) == pytest.approx(0.01)
