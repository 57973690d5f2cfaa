"""The model zoo against the paper: structure, counts, shortcut options and torchvision parity."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

from resnetlab import create_model, list_models, model_info
from resnetlab.analysis.counts import count_macs
from resnetlab.errors import UserError
from resnetlab.models import BasicBlock, Bottleneck, ResNet, ZeroPadShortcut, blocks, count_params
from resnetlab.models.zoo import build_model

ALL = list_models()


def tiny_input(name: str, batch: int = 2) -> torch.Tensor:
    # ImageNet nets downsample by 32, so 32x32 is the smallest input that reaches the head intact.
    return torch.randn(batch, 3, 32, 32)


def count_additions(model: nn.Module) -> int:
    """Additions in the traced forward graph: the shortcut joins, found structurally, not by name."""
    graph = fx.symbolic_trace(model).graph
    adds = {operator.add, operator.iadd, torch.add}
    return sum(1 for node in graph.nodes if node.op == "call_function" and node.target in adds)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_shape_and_finite(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    x = tiny_input(name)
    out = model(x)
    assert out.shape == (2, model_info(name).spec["num_classes"])
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    if name != "plain1202":  # its gradients overflow float32 at initialisation: see the next test
        assert all(torch.isfinite(g).all() for g in grads)
        assert model.conv1.weight.grad.abs().sum() > 0, "gradient must reach the first layer"


def first_layer_grad_norm(name: str) -> float:
    torch.manual_seed(0)
    model = create_model(name)
    model(torch.randn(8, 3, 32, 32)).logsumexp(1).mean().backward()
    return model.conv1.weight.grad.norm().item()


def test_plain_nets_gradients_explode_with_depth_at_init_residual_do_not() -> None:
    # BN keeps activations bounded but each plain layer multiplies the backward signal; the
    # identity path of a residual net keeps it tame. This is why plain-1202 above has inf gradients.
    plain20, plain110 = first_layer_grad_norm("plain20"), first_layer_grad_norm("plain110")
    resnet110 = first_layer_grad_norm("resnet110")
    assert plain110 > 100 * plain20
    assert resnet110 < plain110 / 100


@pytest.mark.parametrize("name", [n for n in ALL if n.startswith("plain")])
def test_plain_twin_has_no_shortcut_additions(name: str) -> None:
    plain = create_model(name)
    residual = create_model(name.replace("plain", "resnet"))
    n_blocks = len(list(residual.blocks()))
    assert count_additions(residual) == n_blocks
    assert count_additions(plain) == 0
    assert all(b.downsample is None for b in plain.blocks())


CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_option_a_params_match_paper_and_plain_twin(depth: int) -> None:
    assert count_params(create_model(f"resnet{depth}")) == CIFAR_PARAMS[depth]
    assert count_params(create_model(f"plain{depth}")) == CIFAR_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_imagenet_params_match_torchvision_counts(depth: int) -> None:
    model = create_model(f"resnet{depth}", bottleneck_stride="3x3")
    assert count_params(model) == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_multiply_adds_within_2_percent_of_table1(depth: int) -> None:
    info = model_info(f"resnet{depth}")
    macs = count_macs(create_model(f"resnet{depth}"), 224)
    assert abs(macs - info.paper_macs) / info.paper_macs < 0.02, macs


def test_resnet20_multiply_adds() -> None:
    # 40.55 M for ResNet-20 at 32x32 (PAPER.md): convs and the fc, option A adds none.
    assert count_macs(create_model("resnet20"), 32) == 40_551_040


def test_torchvision_v15_bottleneck_has_more_multiply_adds_than_caffe() -> None:
    caffe = count_macs(create_model("resnet50"), 224)
    v15 = count_macs(create_model("resnet50", bottleneck_stride="3x3"), 224)
    assert 4.0e9 < v15 < 4.2e9 and 3.8e9 < caffe < 3.9e9


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_state_dict_loads_strict_and_gives_same_logits(depth: int) -> None:
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for m in reference.modules():  # non-trivial BN statistics so eval mode really exercises them
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    ours = create_model(f"resnet{depth}", bottleneck_stride="3x3")
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-5)


def test_option_a_adds_no_parameters() -> None:
    for residual, plain in [("resnet20", "plain20"), ("resnet34", "plain34")]:
        with_a = create_model(residual, shortcut="A")
        assert count_params(with_a) == count_params(create_model(plain))
        assert any(isinstance(b.downsample, ZeroPadShortcut) for b in with_a.blocks())


def test_option_b_projects_only_where_the_shape_changes() -> None:
    model = create_model("resnet34", shortcut="B")
    projected = [i for i, b in enumerate(model.blocks()) if b.downsample is not None]
    # The first block of conv3_x, conv4_x and conv5_x changes the shape (blocks 3, 3+4, 3+4+6).
    assert projected == [3, 7, 13]


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50"])
def test_option_c_projects_on_every_block(name: str) -> None:
    model = create_model(name, shortcut="C")
    for block in model.blocks():
        conv = block.downsample[0]
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert count_params(model) > count_params(create_model(name, shortcut="B"))


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert y[:, 16:].abs().sum() == 0


@pytest.mark.parametrize(("where", "conv1_stride", "conv2_stride"), [("1x1", 2, 1), ("3x3", 1, 2)])
def test_bottleneck_stride_placement(where: str, conv1_stride: int, conv2_stride: int) -> None:
    block = create_model("resnet50", bottleneck_stride=where).layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv1.stride == (conv1_stride,) * 2 and block.conv2.stride == (conv2_stride,) * 2


def test_he_initialisation_scale() -> None:
    torch.manual_seed(0)
    conv = create_model("resnet56").layer3[0].conv2  # 64 in, 3x3: std sqrt(2 / 576)
    expected = (2 / (64 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05


def test_zero_init_residual_off_by_default_and_makes_blocks_identity_when_on() -> None:
    assert all(b.bn2.weight.abs().sum() > 0 for b in create_model("resnet20").blocks())
    model = create_model("resnet20", zero_init_residual=True).eval()
    block = model.layer1[0]
    x = torch.relu(torch.randn(2, 16, 8, 8))  # a block's input is non-negative (after a ReLU)
    torch.testing.assert_close(block(x), x)


def test_preact_identity_shortcut_carries_the_raw_input() -> None:
    model = create_model("resnet20", preact=True, zero_init_residual=True).eval()
    x = torch.randn(2, 16, 8, 8)  # pre-activation blocks pass negative values through unchanged
    torch.testing.assert_close(model.layer1[1](x), x)
    assert model.bn_final is not None and model.bn1 is None


def test_config_rebuilds_the_same_network() -> None:
    model = create_model("resnet50", shortcut="C", bottleneck_stride="3x3", num_classes=7)
    rebuilt = ResNet(**model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))


def test_basic_block_is_used_for_cifar_and_shallow_imagenet_nets() -> None:
    assert all(isinstance(b, BasicBlock) for b in create_model("resnet34").blocks())
    assert len(list(create_model("resnet110").blocks())) == 54


def test_unknown_model_and_bad_override_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean resnet50"):
        create_model("resnt50")
    with pytest.raises(UserError, match="shortcut"):
        create_model("resnet20", shortcut="D")
    with pytest.raises(UserError, match="cannot build"):
        create_model("resnet20", no_such_argument=1)


def test_list_models_patterns() -> None:
    assert list_models("plain*") == [n for n in ALL if n.startswith("plain")]
    assert "resnet1202" in list_models("1202") and "plain1202" in list_models("1202")
    assert list_models("nothing-matches") == []


def test_torch_hub_loads_every_builder_from_the_repository() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for name in ("resnet1202", "plain34", "resnet152"):
        built = torch.hub.load(str(repo), name, source="local", trust_repo=True, verbose=False)
        assert count_params(built) == count_params(create_model(name))
    model = torch.hub.load(str(repo), "resnet20", source="local", verbose=False, num_classes=5)
    assert model.fc.out_features == 5


def _join_out_of_place(self, out: torch.Tensor, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """The blocks' join written out of place, as a reference."""
    if self.residual:
        if self.downsample is None:
            out = out + x
        elif isinstance(self.downsample, ZeroPadShortcut):
            out = out + self.downsample(x)
        else:
            out = out + self.downsample(pre)
    return out if self.preact else F.relu(out)


def _two_sgd_steps(name: str, amp: bool, channels_last: bool, **overrides) -> list[torch.Tensor]:
    """The parameters after two SGD steps of ``name`` (seeded) on a fixed batch, and the first
    step's input gradient; bf16 autocast when ``amp``."""
    torch.manual_seed(0)
    net = build_model(name, num_classes=10, **overrides).train()
    size = 32 if model_info(name).family == "cifar" else 64
    x = torch.randn(4, 3, size, size)
    y = torch.arange(4) % 10
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    grads = []
    for _ in range(2):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(xi).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads.append(xi.grad)
    return [p.detach() for p in net.parameters()] + grads


@pytest.mark.parametrize(
    ("name", "amp", "channels_last", "overrides"),
    [
        ("resnet20", False, False, {}),
        ("resnet20", True, True, {}),
        ("plain20", True, True, {}),
        ("resnet20", False, True, {"shortcut": "B"}),
        ("resnet50", False, False, {"layers": [1, 1, 1, 1]}),
    ],
)
def test_blocks_in_place_add_and_relu_change_no_bit(monkeypatch, name, amp, channels_last, overrides) -> None:
    # The blocks add the shortcut and apply ReLU in place to save memory passes; the same steps with
    # every ReLU and addition out of place must give bit for bit the same weights and gradients.
    in_place = _two_sgd_steps(name, amp, channels_last, **overrides)
    relu = F.relu
    monkeypatch.setattr(F, "relu", lambda t, inplace=False: relu(t))
    monkeypatch.setattr(blocks._Block, "_join", _join_out_of_place)
    out_of_place = _two_sgd_steps(name, amp, channels_last, **overrides)
    assert len(in_place) == len(out_of_place)
    assert all(torch.equal(a, b) for a, b in zip(in_place, out_of_place, strict=True))
