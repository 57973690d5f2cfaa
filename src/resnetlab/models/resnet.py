"""One ResNet class for every network of the paper: CIFAR and ImageNet, plain and residual, A/B/C.

The network is fully described by its constructor arguments, which :attr:`ResNet.config` returns as
plain types: checkpoints and exported weights carry that dict, and ``ResNet(**config)`` rebuilds the
net without the code that trained it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from resnetlab.models.blocks import BLOCKS, SHORTCUT_OPTIONS

STEMS = ("cifar", "imagenet")


class ResNet(nn.Module):
    """A residual (or plain) network as in He et al. (2015), Table 1 and Section 4.2.

    Args:
        block: "basic" ([3x3, 3x3]) or "bottleneck" ([1x1, 3x3, 1x1] with expansion 4).
        layers: blocks per stage, e.g. (3, 3, 3) for ResNet-20 or (3, 4, 6, 3) for ResNet-50.
        widths: filters per stage (before the bottleneck expansion), e.g. (16, 32, 64).
        stem: "cifar" (3x3 conv, 16 filters at full resolution) or "imagenet" (7x7/2 conv, 3x3/2 pool).
        num_classes: outputs of the final fully connected layer.
        residual: False gives the plain twin: the same modules with the shortcuts removed.
        shortcut: "A" (zero-padding identity), "B" (projection where the shape changes), "C" (always).
        bottleneck_stride: "1x1" (the paper's Caffe models) or "3x3" (torchvision v1.5).
        zero_init_residual: zero the last BN of every block (not the paper; Goyal et al. 2017).
        preact: pre-activation blocks (He et al. 2016), the one variant beyond the paper.
        in_channels: channels of the input image.
        stem_width: filters of the first conv; defaults to ``widths[0]``.
    """

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (3, 3, 3),
        widths: Sequence[int] = (16, 32, 64),
        stem: str = "cifar",
        num_classes: int = 10,
        residual: bool = True,
        shortcut: str = "A",
        bottleneck_stride: str = "1x1",
        zero_init_residual: bool = False,
        preact: bool = False,
        in_channels: int = 3,
        stem_width: int | None = None,
    ) -> None:
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if shortcut not in SHORTCUT_OPTIONS:
            raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {shortcut!r}")
        if len(layers) != len(widths) or not layers or min(layers) < 1:
            raise ValueError("layers and widths need one positive entry per stage")
        stem_width = stem_width or widths[0]
        self._config: dict[str, Any] = {
            "block": block,
            "layers": list(layers),
            "widths": list(widths),
            "stem": stem,
            "num_classes": num_classes,
            "residual": residual,
            "shortcut": shortcut,
            "bottleneck_stride": bottleneck_stride,
            "zero_init_residual": zero_init_residual,
            "preact": preact,
            "in_channels": in_channels,
            "stem_width": stem_width,
        }
        self.checkpoint_activations = False
        block_cls = BLOCKS[block]

        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # A pre-activation CIFAR net leaves the first BN-ReLU to the first block (He et al. 2016).
        self.bn1 = None if preact and stem == "cifar" else nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)

        in_planes = stem_width
        self.stage_names: list[str] = []
        for i, (n_blocks, width) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(
                    block_cls(
                        in_planes,
                        width,
                        stride if j == 0 else 1,
                        shortcut=shortcut,
                        residual=residual,
                        preact=preact,
                        bottleneck_stride=bottleneck_stride,
                    )
                )
                in_planes = width * block_cls.expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        # Pre-activation blocks end on a bare conv, so the head needs the last BN-ReLU.
        self.bn_final = nn.BatchNorm2d(in_planes) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._initialise(zero_init_residual)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain types: ``ResNet(**net.config)`` rebuilds the net."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def _initialise(self, zero_init_residual: bool) -> None:
        # He et al. (2015) initialise "as in [13]": zero-mean Gaussian, std sqrt(2 / n) with
        # n = k*k*c_in (the forward case, Eq. 10 of the PReLU paper). BN starts at gamma=1, beta=0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for block in self.blocks():
                nn.init.zeros_(block.last_layer().weight)

    def blocks(self) -> Iterator[nn.Module]:
        """Every residual (or plain) block, in forward order."""
        for name in self.stage_names:
            yield from getattr(self, name)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first conv (with BN, ReLU and, for ImageNet, the max-pool)."""
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        return self.maxpool(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool and the fully connected classifier."""
        if self.bn_final is not None:
            x = self.relu(self.bn_final(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()
        for block in self.blocks():
            if recompute:
                x = checkpoint(block, x, use_reentrant=False, context_fn=_frozen_bn_on_recompute(block))
            else:
                x = block(x)
        return self.head(x)


def _frozen_bn_on_recompute(block: nn.Module):
    """Contexts for activation checkpointing that keep BN running statistics exact.

    The recomputation re-runs the block's forward in training mode, which would update the BN
    running mean and variance a second time. Momentum 0 during the recomputation leaves them as the
    first forward pass set them, so a checkpointed run ends with the same buffers as a plain one.
    """
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    @contextlib.contextmanager
    def frozen() -> Iterator[None]:
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, (momentum, tracked) in zip(norms, saved, strict=True):
                m.momentum = momentum
                m.num_batches_tracked.copy_(tracked)

    return lambda: (contextlib.nullcontext(), frozen())
