"""Activation checkpointing per block: the same gradients and BN statistics, far fewer saved tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.models import build_model
from resnetlab.models.resnet import ResNet

# A small depth of each block type: ResNet-20 (basic, option A) and narrow bottleneck nets with a
# projection shortcut (its BN runs inside the checkpointed block) and the pre-activation variant.
NETS = {
    "resnet20": (lambda: build_model("resnet20"), 32),
    "bottleneck-B": (lambda: ResNet("bottleneck", (2, 2), (8, 16), stem="imagenet", shortcut="B"), 32),
    "bottleneck-preact-C": (
        lambda: ResNet("bottleneck", (1, 2), (8, 16), stem="imagenet", shortcut="C", preact=True),
        32,
    ),
}


def _pair(key: str) -> tuple[nn.Module, nn.Module, int]:
    build, size = NETS[key]
    torch.manual_seed(0)
    plain = build().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.checkpoint_activations = True
    return plain, checkpointed, size


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _batch(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, size, size, generator=g), torch.randint(0, 10, (8,), generator=g)


@pytest.mark.parametrize("key", list(NETS))
def test_gradients_and_bn_statistics_match(key: str) -> None:
    plain, checkpointed, size = _pair(key)
    opts = [
        torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        for m in (plain, checkpointed)
    ]
    for step in range(2):  # the second step runs on updated weights and momentum buffers
        x, y = _batch(size, seed=step)
        for model, opt in zip((plain, checkpointed), opts, strict=True):
            _train_step(model, opt, x, y)
        for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-6), f"gradient of {name} differs"
        for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
            assert torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6), f"BN buffer {name} differs"


def _saved_tensor_count(model: nn.Module, x: torch.Tensor) -> int:
    """Tensors autograd saves for backward outside any checkpointed region, during one forward."""
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return count


def test_checkpointing_actually_drops_block_activations() -> None:
    plain, checkpointed, size = _pair("resnet20")
    x, _ = _batch(size, seed=0)
    kept, dropped = _saved_tensor_count(plain, x), _saved_tensor_count(checkpointed, x)
    # Only the stem, the block inputs and the head are saved: a small fraction of the plain run.
    assert dropped < kept / 4


def test_eval_and_no_grad_do_not_checkpoint() -> None:
    plain, checkpointed, size = _pair("resnet20")
    x, _ = _batch(size, seed=0)
    checkpointed.eval()
    plain.eval()
    assert _saved_tensor_count(checkpointed, x) == _saved_tensor_count(plain, x)
    with torch.no_grad():
        assert torch.equal(checkpointed(x), plain(x))
