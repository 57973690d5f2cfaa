"""Residual building blocks of He et al. (2015), with their plain twins and shortcut options A/B/C.

A block computes ``relu(F(x) + shortcut(x))`` (Fig. 2 of the paper): BN follows every conv and comes
before the activation, and the addition comes before the last ReLU. With ``residual=False`` the very
same modules run without the addition: the paper's plain counterpart. Parameter names follow
torchvision (``conv1``, ``bn1``, ..., ``downsample``) so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BN follows)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (BN follows)."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity with stride-``s`` subsampling and zero-padded extra channels; no parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError("option A can only add channels, not remove them")
        self.extra = out_planes - in_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


def make_shortcut(
    option: str, in_planes: int, out_planes: int, stride: int, preact: bool = False
) -> nn.Module | None:
    """The shortcut module for one block, or None for a parameter-free identity.

    A: identity, zero-padding where the shape changes. B: conv1x1+BN projection only where the
    shape changes. C: projection on every block. Pre-activation blocks project with a bare conv
    (the BN belongs to the next block's pre-activation, He et al. 2016).
    """
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {SHORTCUT_OPTIONS}, got {option!r}")
    shape_changes = stride != 1 or in_planes != out_planes
    if option == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride) if shape_changes else None
    if option == "B" and not shape_changes:
        return None
    if preact:
        return nn.Sequential(conv1x1(in_planes, out_planes, stride))
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class _Block(nn.Module):
    """What basic and bottleneck blocks share: the shortcut, the plain switch and the addition."""

    expansion = 1

    def __init__(self, residual: bool, preact: bool) -> None:
        super().__init__()
        self.residual = residual
        self.preact = preact
        self.downsample: nn.Module | None = None

    def last_layer(self) -> nn.Module:
        """The module that `zero_init_residual` zeroes so the block starts as an identity."""
        raise NotImplementedError

    def shortcut(self, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """The shortcut of a residual block: the identity, option A's subsampling and zero-padding, or
        the projection. ``pre`` is the pre-activated input of a pre-activation block (``x``
        otherwise): a projection reads it, an identity shortcut keeps the raw ``x`` (He et al. 2016).
        """
        if self.downsample is None:
            return x
        if isinstance(self.downsample, ZeroPadShortcut):
            return self.downsample(x)
        return self.downsample(pre)

    def _join(self, out: torch.Tensor, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """Add the shortcut (residual nets only) and apply the final ReLU (post-activation only)."""
        if self.residual:
            # In place: ``out`` is the block's own fresh output, which no backward reads, and in every
            # mode the nets run (float32, bf16 autocast, either memory format) the shortcut has its
            # dtype and layout. Saves an allocation and a pass over memory (2-5% of an eager CPU
            # step) and gives the same bits as ``out + shortcut``.
            out += self.shortcut(x, pre)
        return out if self.preact else F.relu(out, inplace=True)


class BasicBlock(_Block):
    """Two 3x3 convs, ``[3x3 w, 3x3 w]`` (Table 1, ResNet-18/34 and every CIFAR net)."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        residual: bool = True,
        preact: bool = False,
        bottleneck_stride: str = "1x1",
    ) -> None:
        super().__init__(residual, preact)
        del bottleneck_stride  # only bottlenecks have a 1x1 to put the stride on
        self.bn0 = nn.BatchNorm2d(in_planes) if preact else None
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        # Pre-activation: BN comes before each conv, so the block ends with the bare conv2.
        self.bn2 = None if preact else nn.BatchNorm2d(planes)
        if residual:
            self.downsample = make_shortcut(shortcut, in_planes, planes, stride, preact)

    def last_layer(self) -> nn.Module:
        return self.conv2 if self.preact else self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn0(x)) if self.preact else x
        out = self.conv2(F.relu(self.bn1(self.conv1(pre)), inplace=True))
        if not self.preact:
            out = self.bn2(out)
        return self._join(out, x, pre)


class Bottleneck(_Block):
    """``[1x1 w, 3x3 w, 1x1 4w]`` (Table 1, ResNet-50/101/152).

    ``bottleneck_stride="1x1"`` puts the downsampling stride on the first 1x1 conv as the paper's
    Caffe models do; ``"3x3"`` puts it on the 3x3 conv as torchvision's "v1.5" does.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        residual: bool = True,
        preact: bool = False,
        bottleneck_stride: str = "1x1",
    ) -> None:
        super().__init__(residual, preact)
        if bottleneck_stride not in ("1x1", "3x3"):
            raise ValueError(f"bottleneck_stride must be '1x1' or '3x3', got {bottleneck_stride!r}")
        out_planes = planes * self.expansion
        s1, s3 = (stride, 1) if bottleneck_stride == "1x1" else (1, stride)
        self.bn0 = nn.BatchNorm2d(in_planes) if preact else None
        self.conv1 = conv1x1(in_planes, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = None if preact else nn.BatchNorm2d(out_planes)
        if residual:
            self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride, preact)

    def last_layer(self) -> nn.Module:
        return self.conv3 if self.preact else self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn0(x)) if self.preact else x
        out = F.relu(self.bn1(self.conv1(pre)), inplace=True)
        out = self.conv3(F.relu(self.bn2(self.conv2(out)), inplace=True))
        if not self.preact:
            out = self.bn3(out)
        return self._join(out, x, pre)


BLOCKS: dict[str, type[_Block]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
