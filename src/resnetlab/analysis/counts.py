"""Parameter and multiply-add counts, in total and per stage, and the FLOPs of a training step.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per
multiply-add of every conv and matmul; we halve it so the numbers read like the paper's "FLOPs"
(Table 1), which are multiply-adds. BN, ReLU, pooling and additions are not counted, as in the paper.
:func:`train_step_flops` counts the forward and backward of the weighted layers from their shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnetlab.models.params import count_params
from resnetlab.models.resnet import ResNet


@dataclass(frozen=True)
class StageCount:
    """One row of a model summary: a part of the net, its output shape, params and multiply-adds."""

    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def count_macs(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass on a single ``input_size`` x ``input_size`` image."""
    x = torch.zeros(1, in_channels, input_size, input_size, device=_device_of(model))
    was_training = model.training
    model.eval()
    try:
        return _macs(model, x)[0]
    finally:
        model.train(was_training)


def train_step_flops(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """FLOPs (2 per multiply-add) of one SGD step on one ``input_size`` image, forward and backward.

    The rule, per conv and linear layer with ``m`` forward multiply-adds (its output elements times
    the input channels per group times the kernel area; for a linear layer, in x out features):
    forward ``2m``, weight gradient ``2m``, input gradient ``2m``, except for the layers that read
    the image itself, whose input gradient nothing needs (autograd skips it). So a net whose first
    conv has ``m0`` multiply-adds and whose weighted layers have ``M`` in all costs ``6M - 2 m0``.
    BN, ReLU, pooling, additions, the loss and the update are not counted (memory-bound, no GEMM).
    The layers are found by forward hooks on one eval-mode pass (the shapes alone matter), so any
    net built from ``nn.Conv2d`` and ``nn.Linear`` is counted, option-B/C shortcuts included.
    """
    x = torch.zeros(1, in_channels, input_size, input_size, device=_device_of(model))
    flops = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs = out.numel() * module.in_features
        flops += (4 if inputs[0] is x else 6) * macs

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return flops


def _macs(fn: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """Multiply-adds of ``fn(x)`` and its output."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = fn(x)
    return counter.get_total_flops() // 2, out


def summarize(model: ResNet, input_size: int, in_channels: int = 3) -> list[StageCount]:
    """Per-part counts (stem, each stage, head) and a final "total" row, for one image."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, input_size, input_size, device=_device_of(model))
    stem_params = count_params(model.conv1) + (count_params(model.bn1) if model.bn1 is not None else 0)
    rows = []
    macs, x = _macs(model.stem, x)
    rows.append(StageCount("stem", tuple(x.shape[1:]), stem_params, macs))
    for name in model.stage_names:
        stage = getattr(model, name)
        macs, x = _macs(stage, x)
        rows.append(StageCount(name, tuple(x.shape[1:]), count_params(stage), macs))
    head_params = count_params(model.fc) + (count_params(model.bn_final) if model.bn_final is not None else 0)
    macs, x = _macs(model.head, x)
    rows.append(StageCount("head", tuple(x.shape[1:]), head_params, macs))
    model.train(was_training)
    rows.append(StageCount("total", rows[-1].output_shape, count_params(model), sum(r.macs for r in rows)))
    return rows


def summary_dict(rows: list[StageCount]) -> list[dict]:
    """Rows as plain dicts (for JSON)."""
    return [asdict(r) for r in rows]


def _device_of(model: nn.Module) -> torch.device:
    # A model built under ``torch.device("meta")`` is counted without computing anything.
    return next(model.parameters()).device


def meta_model(name: str, **overrides) -> ResNet:
    """A registered net built on the meta device: counts without allocating or computing."""
    from resnetlab.models.zoo import build_model

    with torch.device("meta"):
        return build_model(name, **overrides)
