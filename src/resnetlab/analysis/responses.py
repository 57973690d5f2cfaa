"""Layer responses of Fig. 7: the std of every 3x3 layer's output after BN, before ReLU and addition.

He et al. (2015, Sec. 4.2) measure "the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)" on the test set, and find that residual functions respond less than
plain layers: the residual branch only has to nudge the identity. We hook the BN that follows each
3x3 conv (the CIFAR stem's included) and pool the std over every element (images, channels and
positions) of the whole test set, with the net in evaluation mode (running BN statistics).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from resnetlab.models.resnet import ResNet


@dataclass(frozen=True)
class LayerResponse:
    """The response of one 3x3 layer: its position in forward order, module name and std."""

    index: int  # 1-based, in forward order (the x axis of Fig. 7, top)
    name: str  # the hooked BN's module name, e.g. "layer2.0.bn1"
    std: float  # std over every element of the layer's response on the data given


def response_layers(model: ResNet) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BN modules that directly follow a 3x3 conv, in forward order, with their names.

    Basic blocks contribute bn1 and bn2, bottlenecks their bn2 (the one after the 3x3); the CIFAR
    stem's bn1 counts too (its conv is 3x3). Pre-activation nets put BN before the conv, so the
    paper's definition does not apply to them and they raise ValueError.
    """
    if model.config["preact"]:
        raise ValueError("layer responses (Fig. 7) are defined for post-activation nets, not preact ones")
    layers: list[tuple[str, nn.BatchNorm2d]] = []
    if model.conv1.kernel_size == (3, 3) and model.bn1 is not None:
        layers.append(("bn1", model.bn1))
    for stage in model.stage_names:
        for j, block in enumerate(getattr(model, stage)):
            pairs = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
            for conv_name, bn_name in pairs:
                conv, bn = getattr(block, conv_name, None), getattr(block, bn_name, None)
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and bn is not None:
                    layers.append((f"{stage}.{j}.{bn_name}", bn))
    return layers


class _Moments:
    """Running count, sum and sum of squares in float64: an exact pooled std over many batches."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.squares = 0.0

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        out = output.detach().double()
        self.n += out.numel()
        self.total += out.sum().item()
        self.squares += out.square().sum().item()

    def std(self) -> float:
        if self.n < 2:
            return float("nan")
        mean = self.total / self.n
        var = (self.squares - self.n * mean * mean) / (self.n - 1)
        return max(var, 0.0) ** 0.5


@dataclass(frozen=True)
class Measurement:
    """The layer responses of one pass over the data, and the top-1 error of the same forward passes."""

    responses: list[LayerResponse]
    images: int
    top1_error: float | None  # None when the batches carry no labels


def measure_responses(
    model: ResNet,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...]],
    device: str | torch.device = "cpu",
    limit: int | None = None,
    autocast: bool = False,
) -> Measurement:
    """Std of every 3x3 layer's response (after BN) over ``batches``, in forward order, and the
    top-1 error of the logits where the batches are (inputs, labels, ...) tuples.

    ``batches`` yields input tensors or such tuples, e.g. a test-set
    :class:`~resnetlab.data.loader.TensorBatches` epoch; ``limit`` stops after that many images;
    ``autocast`` runs the forward passes under bf16 autocast (the moments are summed in float64
    either way). The model is evaluated in eval mode and left in the mode it came in.
    """
    layers = response_layers(model)
    moments = [_Moments() for _ in layers]
    handles = [bn.register_forward_hook(m) for (_, bn), m in zip(layers, moments, strict=True)]
    was_training = model.training
    model.eval()
    images, wrong, labelled = 0, 0, True
    device = torch.device(device)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            for batch in batches:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                take = x.shape[0] if limit is None else min(x.shape[0], limit - images)
                if take <= 0:
                    break
                logits = model(x[:take].to(device))
                images += take
                if isinstance(batch, tuple | list) and len(batch) > 1:
                    wrong += int((logits.argmax(1) != batch[1][:take].to(logits.device)).sum())
                else:
                    labelled = False
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if images == 0:
        raise ValueError("no batches were given: cannot measure layer responses")
    responses = [
        LayerResponse(i + 1, name, m.std())
        for i, ((name, _), m) in enumerate(zip(layers, moments, strict=True))
    ]
    return Measurement(responses, images, wrong / images if labelled else None)


def layer_responses(
    model: ResNet,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...]],
    device: str | torch.device = "cpu",
) -> list[LayerResponse]:
    """Std of every 3x3 layer's response (after BN) over ``batches``, in forward order (see
    :func:`measure_responses`)."""
    return measure_responses(model, batches, device).responses


def sorted_stds(responses: list[LayerResponse]) -> list[float]:
    """The stds in descending order (Fig. 7, bottom)."""
    return sorted((r.std for r in responses), reverse=True)
