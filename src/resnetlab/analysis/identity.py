"""Identity mappings (He et al. 2015, Sec. 3.1): how well stacked blocks learn the identity by SGD,
and the construction argument's deeper net that computes exactly what a shallower one computes.

Part 1 trains K plain blocks and K residual blocks of the same width (the very same modules, with
and without the shortcut; each block is two conv-BN-ReLU layers) to reproduce their input maps.
Part 2 deepens a trained CIFAR net with identity blocks; its training error is the shallower net's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.models import ResNet
from resnetlab.models.blocks import BasicBlock

LR, MOMENTUM, CLIP, WARMUP = 0.1, 0.9, 1.0, 0.2  # SGD for part 1: lr, momentum, grad-norm clip, warm-up share
BATCH, HELD_OUT = 32, 256  # maps per SGD step; maps the remaining error is measured on


def stack(k: int, width: int, residual: bool) -> nn.Sequential:
    """K basic blocks of ``width`` channels, He-initialised; plain ones are the same without shortcut."""
    net = nn.Sequential(*[BasicBlock(width, width, residual=residual, shortcut="A") for _ in range(k)])
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return net


class MapSource:
    """Non-negative maps to reproduce (a block's input is a ReLU output): noise or image features.

    ``images`` (train, test uint8 tensors) selects features of real images: a fixed random 3x3 conv
    and ReLU on the standardised images, average-pooled to ``size``. Each source replays the same
    batches for the same seed, so plain and residual stacks see identical data.
    """

    def __init__(
        self, width: int, size: int, seed: int, images: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        self.width, self.size = width, size
        self.gen = torch.Generator().manual_seed(seed)
        self.train: torch.Tensor | None = None
        if images is None:
            self.held = F.relu(torch.randn(HELD_OUT, width, size, size, generator=self.gen))
            return
        conv = nn.Conv2d(images[0].shape[1], width, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, generator=self.gen, nonlinearity="relu")
        with torch.no_grad():
            self.train = self._features(conv, images[0])
            self.held = self._features(conv, images[1][:HELD_OUT])

    def _features(self, conv: nn.Conv2d, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
        return F.adaptive_avg_pool2d(F.relu(conv(x)), self.size)

    def batch(self) -> torch.Tensor:
        if self.train is not None:
            return self.train[torch.randint(len(self.train), (BATCH,), generator=self.gen)]
        return F.relu(torch.randn(BATCH, self.width, self.size, self.size, generator=self.gen))


def learn_identity(net: nn.Module, source: MapSource, steps: int, device: torch.device) -> float:
    """Train ``net`` to output its input (MSE); returns the remaining error on held-out maps.

    The error is the mean squared error divided by the variance of the maps: 0 is a perfect identity,
    1 is no better than outputting the mean. SGD with momentum, a linear warm-up then cosine decay,
    and gradient clipping (a deep residual stack starts far from the identity, see the notes).
    """
    net.to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    warm = max(1, round(WARMUP * steps))
    for i in range(steps):
        scale = (
            (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))
        )
        for group in opt.param_groups:
            group["lr"] = LR * scale
        x = source.batch().to(device)
        loss = F.mse_loss(net(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
    net.eval()
    with torch.no_grad():
        held = source.held.to(device)
        return (F.mse_loss(net(held), held) / held.var()).item()


def deepen(model: ResNet, depth: int) -> ResNet:
    """A ``depth``-layer net computing what ``model`` computes: its layers copied, identity blocks added.

    The extra blocks go at the end of each stage (where shapes do not change). A residual block with
    the last BN's gamma and beta at zero adds nothing to its shortcut: an exact identity in any mode.
    A plain block becomes the identity in eval mode with Dirac (identity) kernels and BNs whose
    running statistics and scale cancel out; its ReLUs pass the non-negative input unchanged.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR net has depth 6n+2, not {depth}")
    config = model.config
    deep = ResNet(**{**config, "layers": [(depth - 2) // 6] * len(config["layers"])})
    deep.load_state_dict(model.state_dict(), strict=False)  # the added blocks keep their own weights
    with torch.no_grad():
        for name, old in zip(model.stage_names, config["layers"], strict=True):
            for block in list(getattr(deep, name))[old:]:
                if block.residual:
                    nn.init.zeros_(block.bn2.weight)
                    nn.init.zeros_(block.bn2.bias)
                    continue
                for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                    nn.init.dirac_(conv.weight)
                    bn.running_mean.zero_()
                    bn.running_var.fill_(1.0)
                    bn.weight.fill_(math.sqrt(1.0 + bn.eps))
                    bn.bias.zero_()
    return deep.eval()


def train_error(model: ResNet, batches: Any, device: torch.device) -> tuple[float, torch.Tensor]:
    """Top-1 error (eval mode) on unaugmented training images ``batches``, and the logits (float64)."""
    model.to(device).eval()
    logits, labels = [], []
    with torch.no_grad():
        for x, y in batches:
            logits.append(model(x).double().cpu())
            labels.append(y.cpu())
    out, y = torch.cat(logits), torch.cat(labels)
    return (out.argmax(1) != y).double().mean().item(), out
