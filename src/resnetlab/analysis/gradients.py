"""Per-layer weight-gradient norms: does the gradient reaching the early layers vanish?

The study notes argue that the identity shortcut keeps gradients from vanishing (the derivative of
``x`` is 1). The paper itself is more careful (Sec. 4.1): its plain nets have BN, and "the backward
propagated gradients exhibit healthy norms". These functions measure exactly that, one L2 norm per
conv / fc weight, averaged over mini-batches, with the net in training mode as SGD sees it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LayerGradient:
    """The gradient norm of one layer's weight."""

    index: int  # 1-based, in forward order
    name: str  # parameter name, e.g. "layer1.0.conv2.weight"
    kind: str  # "conv" or "fc"
    norm: float  # L2 norm of d(loss)/d(weight), averaged over the batches


def weight_layers(model: nn.Module) -> list[tuple[str, str, nn.Parameter]]:
    """(name, kind, weight) of every conv and linear layer, in registration (forward) order."""
    layers = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            layers.append((f"{module_name}.weight", "conv", module.weight))
        elif isinstance(module, nn.Linear):
            layers.append((f"{module_name}.weight", "fc", module.weight))
    return layers


def gradient_norms(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> list[LayerGradient]:
    """Mean over ``batches`` of each layer's weight-gradient L2 norm, in forward order.

    The model runs in training mode (batch statistics in BN, as during SGD) and is left in the mode
    it came in. Gradients are taken with ``torch.autograd.grad``, so ``.grad`` fields are untouched;
    BN running statistics do get updated by the forward passes, as in any training step.
    """
    layers = weight_layers(model)
    weights = [w for _, _, w in layers]
    totals = torch.zeros(len(layers), dtype=torch.float64)
    count = 0
    was_training = model.training
    model.train()
    try:
        for x, y in batches:
            loss = loss_fn(model(x.to(device)), y.to(device))
            grads = torch.autograd.grad(loss, weights)
            totals += torch.stack([g.detach().double().norm() for g in grads]).cpu()
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no batches were given: cannot measure gradient norms")
    return [
        LayerGradient(i + 1, name, kind, float(t / count))
        for i, ((name, kind, _), t) in enumerate(zip(layers, totals, strict=True))
    ]


def early_late_ratio(norms: list[LayerGradient], fraction: float = 0.25) -> float:
    """Median gradient norm of the first ``fraction`` of conv layers over that of the last ``fraction``.

    Far below 1 means the gradient shrinks on its way back to the input (vanishing); about 1 or more
    means the early layers get gradients as large as the late ones.
    """
    convs = [g.norm for g in norms if g.kind == "conv"]
    if len(convs) < 2:
        raise ValueError("need at least two conv layers to compare early and late gradients")
    k = max(1, round(len(convs) * fraction))
    late = statistics.median(convs[-k:])
    return statistics.median(convs[:k]) / late if late > 0 else float("inf")
