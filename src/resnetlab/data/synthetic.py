"""A small learnable dataset made in memory (``synthetic[:TRAIN,TEST,SIZE,CLASSES]``), never downloaded."""

from __future__ import annotations

import torch

from resnetlab.data.loader import ImageSet
from resnetlab.data.splits import DatasetSplits
from resnetlab.errors import UserError


def synthetic(
    train: int = 512, test: int = 256, size: int = 16, classes: int = 10, seed: int = 0
) -> DatasetSplits:
    """A small learnable dataset for tests and smoke runs, made in memory (never downloaded).

    Each class is a fixed random low-frequency colour pattern; images are that pattern plus noise and
    a random shift, so a small net learns it in a few dozen steps but not in one.
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.nn.functional.interpolate(
        torch.rand(classes, 3, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False
    )

    def make(n: int) -> ImageSet:
        labels = torch.randint(0, classes, (n,), generator=g)
        noise = 0.35 * torch.randn(n, 3, size, size, generator=g)
        images = (prototypes[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        shifts = torch.randint(-2, 3, (2,), generator=g).tolist()
        return ImageSet(torch.roll(images, shifts=shifts, dims=(2, 3)), labels)

    return DatasetSplits(
        f"synthetic:{train},{test},{size},{classes}",
        [f"class{i}" for i in range(classes)],
        train=make(train),
        test=make(test),
    )


def parse_synthetic(arg: str) -> DatasetSplits:
    """The synthetic set of a ``synthetic[:TRAIN,TEST,SIZE,CLASSES]`` spec's argument."""
    try:
        values = [int(v) for v in arg.split(",")] if arg else []
        if len(values) > 4 or any(v < 1 for v in values):
            raise ValueError
    except ValueError:
        raise UserError(
            f"bad synthetic spec {arg!r}: expected up to four positive integers "
            "TRAIN,TEST,SIZE,CLASSES, e.g. synthetic:512,256,16,10"
        ) from None
    return synthetic(*values)
