"""Inference-time rewrites of a trained ResNet: BN folded into convs, channels_last, optional compile.

In eval mode a BatchNorm that directly follows a conv is a fixed per-channel affine map, so it can be
absorbed into that conv's weight and a new bias: ``W' = W * g / sqrt(v + eps)``,
``b' = beta + (b - m) * g / sqrt(v + eps)``. The folded net computes the same function with one
memory pass less per conv. The pairs are the model's own structure: in every block ``convN`` feeds
``bnN`` directly (pre- and post-activation alike), the stem's ``conv1`` feeds ``bn1``, and a projection
shortcut is ``Sequential(conv, bn)``. A BN that comes *before* a conv (the pre-activation ``bn0`` and
``bn_final``) has a ReLU in between and stays.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Absorb ``bn`` (in its eval-mode form, running statistics) into ``conv``, in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BN of {bn.num_features} features cannot follow a conv of {conv.out_channels}")
    # Fold in float64 so the rounding of the folded weights stays far below the 1e-4 tolerance.
    gamma = (
        bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var, dtype=torch.double)
    )
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(gamma)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    new_bias = beta + (bias - bn.running_mean.double()) * scale
    conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def _fold_pair(owner: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(owner, conv_name, None), getattr(owner, bn_name, None)
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        fold_conv_bn(conv, bn)
        setattr(owner, bn_name, nn.Identity())


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv-then-BN pair folded into the conv.

    The folded BNs become ``nn.Identity``; ``model`` itself is not changed. The copy computes what
    ``model.eval()`` computes (up to float rounding) and must not be trained: its BNs are gone.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        for conv_name, bn_name in _PAIRS:
            _fold_pair(module, conv_name, bn_name)
        downsample = getattr(module, "downsample", None)
        if isinstance(downsample, nn.Sequential) and len(downsample) == 2:
            _fold_pair(downsample, "0", "1")
    return folded


def optimize_for_inference(model: nn.Module, channels_last: bool = True, compile: bool = False) -> nn.Module:
    """A fast eval-only copy of ``model``: BN folded, eval mode, no grads, channels_last, compiled.

    ``channels_last`` also expects the caller to pass channels_last inputs (an NCHW input still
    works, at the cost of a layout conversion). ``compile`` wraps the model in ``torch.compile`` with
    inductor's weight freezing (weights become constants: prepacked for oneDNN on the CPU, fused
    conv-bias-ReLU); the first call then takes the compile time. Run it under
    ``torch.inference_mode()``.
    """
    fast = fold_bn(model)
    fast.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if compile:
        fast = torch.compile(fast, options={"freezing": True})
    return fast


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |output - reference| / max |reference|``: the error measure of the 1e-4 folding check."""
    scale = reference.detach().abs().max().clamp_min(torch.finfo(reference.dtype).tiny)
    return float((output.detach().float() - reference.detach().float()).abs().max() / scale)
