"""Layer responses (Fig. 7) and per-layer gradient norms on tiny nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.analysis.gradients import LayerGradient, early_late_ratio, gradient_norms, weight_layers
from resnetlab.analysis.responses import layer_responses, measure_responses, response_layers, sorted_stds
from resnetlab.models import ResNet, build_model


def _tiny(residual: bool = True, **kw) -> ResNet:
    torch.manual_seed(0)
    spec = {"layers": (2, 1, 1), "widths": (4, 8, 8), "residual": residual} | kw
    return ResNet(**spec)


def _count_3x3(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.modules())


@pytest.mark.parametrize(
    "model",
    [
        _tiny(True),
        _tiny(False),
        _tiny(True, shortcut="B"),
        build_model("plain20"),
        ResNet(block="bottleneck", layers=(1, 2), widths=(4, 8), stem="imagenet"),
    ],
    ids=["resnet", "plain", "option-B", "plain20", "bottleneck-imagenet"],
)
def test_one_hook_per_3x3_conv(model: ResNet) -> None:
    layers = response_layers(model)
    assert len(layers) == _count_3x3(model)
    assert all(isinstance(bn, nn.BatchNorm2d) for _, bn in layers)
    assert len({id(bn) for _, bn in layers}) == len(layers)


def test_cifar_net_layers_in_forward_order() -> None:
    names = [name for name, _ in response_layers(build_model("resnet20"))]
    assert len(names) == 19  # the stem's 3x3 and two per block, 3 x 3 blocks
    assert names[:4] == ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert names[-1] == "layer3.2.bn2"


def test_response_std_matches_a_direct_computation_and_hooks_are_removed() -> None:
    model = _tiny(True)
    model.train()
    x = torch.randn(6, 3, 8, 8)
    batches = [x[:4], (x[4:], torch.zeros(2))]  # plain tensors or (x, y) tuples both work
    responses = layer_responses(model, batches)
    assert model.training  # the mode it came in
    assert all(not bn._forward_hooks for _, bn in response_layers(model))
    model.eval()
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
        block = model.layer1[0]
        first = block.bn1(block.conv1(F.relu(stem)))
    assert responses[0].std == pytest.approx(stem.std().item(), rel=1e-5)
    assert responses[1].std == pytest.approx(first.std().item(), rel=1e-5)
    assert [r.index for r in responses] == list(range(1, len(responses) + 1))
    assert sorted_stds(responses) == sorted((r.std for r in responses), reverse=True)


def test_responses_are_taken_before_the_addition() -> None:
    # The same weights with and without shortcuts: identical until the first addition (after the first
    # block's bn2), different after it. Hooks placed after the addition would differ at layer 3 already.
    resnet = _tiny(True)
    plain = _tiny(False)
    plain.load_state_dict(resnet.state_dict())
    x = torch.randn(8, 3, 8, 8)
    r = [v.std for v in layer_responses(resnet, [x])]
    p = [v.std for v in layer_responses(plain, [x])]
    assert r[:3] == pytest.approx(p[:3], rel=1e-6)
    assert r[3] != pytest.approx(p[3], rel=1e-3)


def test_bf16_responses_are_the_conv_in_bf16_and_stay_close_to_fp32() -> None:
    model = _tiny(True).eval()
    x = torch.randn(16, 3, 8, 8)
    fp32 = measure_responses(model, [x])
    bf16 = measure_responses(model, [x], autocast=True)
    # independently: the stem's conv on bf16-rounded input and weights, BN after it
    with torch.no_grad():
        conv = F.conv2d(x.bfloat16(), model.conv1.weight.bfloat16(), padding=1).float()
        stem = model.bn1(conv)
    assert bf16.responses[0].std == pytest.approx(stem.std().item(), rel=1e-2)
    assert bf16.responses[0].std != fp32.responses[0].std  # really computed in another precision
    assert [r.std for r in bf16.responses] == pytest.approx([r.std for r in fp32.responses], rel=0.05)


def test_responses_refuse_preact_nets_and_empty_data() -> None:
    with pytest.raises(ValueError, match="post-activation"):
        response_layers(_tiny(True, preact=True))
    with pytest.raises(ValueError, match="no batches"):
        layer_responses(_tiny(True), [])


def test_weight_layers_in_forward_order() -> None:
    model = _tiny(True)
    layers = weight_layers(model)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(layers) == convs + 1
    assert layers[0][:2] == ("conv1.weight", "conv")
    assert layers[-1][:2] == ("fc.weight", "fc")


def test_gradient_norms_match_backward_and_leave_grads_alone() -> None:
    model = _tiny(True)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    norms = gradient_norms(model, [(x, y)])
    assert all(p.grad is None for p in model.parameters())
    reference = _tiny(True)
    F.cross_entropy(reference(x), y).backward()
    expected = [w.grad.norm().item() for _, _, w in weight_layers(reference)]
    assert [g.norm for g in norms] == pytest.approx(expected, rel=1e-4)


def test_gradient_norms_average_over_batches() -> None:
    model = _tiny(False)
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))) for _ in range(2)]
    both = gradient_norms(model, batches)
    single = [gradient_norms(model, [b]) for b in batches]
    for i, g in enumerate(both):
        assert g.norm == pytest.approx((single[0][i].norm + single[1][i].norm) / 2, rel=1e-4)


def test_shortcuts_carry_the_gradient_past_blocks_that_output_zero() -> None:
    # Zero-gamma blocks output nothing: a plain net passes no gradient to its stem, a residual net
    # passes it through the identity shortcuts: the mechanism the study notes credit.
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    resnet = _tiny(True, zero_init_residual=True)
    plain = _tiny(False, zero_init_residual=True)
    r = {g.name: g.norm for g in gradient_norms(resnet, [(x, y)])}
    p = {g.name: g.norm for g in gradient_norms(plain, [(x, y)])}
    assert r["conv1.weight"] > 0
    assert p["conv1.weight"] == 0
    assert r["layer1.0.conv2.weight"] == 0  # behind the zero gamma


def test_early_late_ratio() -> None:
    def grads(values: list[float]) -> list[LayerGradient]:
        rows = [LayerGradient(i + 1, f"c{i}", "conv", v) for i, v in enumerate(values)]
        return [*rows, LayerGradient(len(values) + 1, "fc", "fc", 1e6)]  # the fc does not count

    assert early_late_ratio(grads([0.01, 0.01, 1, 1, 1, 1, 1, 1])) == pytest.approx(0.01)
    assert early_late_ratio(grads([2, 2, 1, 1, 1, 1, 1, 1])) == pytest.approx(2)
    with pytest.raises(ValueError):
        early_late_ratio(grads([1]))
