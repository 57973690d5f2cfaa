"""A randomly initialised CIFAR ResNet in akamaster/pytorch_resnet_cifar10's layout, written here.

It computes what their nets compute (option A pads the subsampled identity with planes // 4 zero
channels on both sides) and is saved as their files are: a legacy-format ``torch.save`` of
``{"state_dict": ..., "best_prec1": ...}`` with DataParallel's ``module.`` prefixes and no BN
``num_batches_tracked``. No weights of theirs are used.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class TheirBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or in_planes != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class TheirResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes_in = 16
        for stage, planes in enumerate((16, 32, 64), 1):
            blocks = []
            for b in range(n):
                blocks.append(TheirBlock(planes_in, planes, 2 if stage > 1 and b == 0 else 1))
                planes_in = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.shape[3]).flatten(1))


def random_their_net(depth: int, seed: int = 0) -> TheirResNet:
    """Their net with random weights and random BN affine parameters and running statistics."""
    torch.manual_seed(seed)
    net = TheirResNet(depth)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def save_their_way(net: nn.Module, path: Path) -> Path:
    """Write ``net`` as their trainer.py wrote its files."""
    state = {f"module.{k}": v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "best_prec1": 90.0}, path, _use_new_zipfile_serialization=False)
    return path
