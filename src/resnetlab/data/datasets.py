"""Dataset specs (``cifar10``, ``cifar100``, ``folder:PATH``, ``imagenet:PATH``, ``synthetic``) and
:func:`load_dataset`, the one entry point the engine and the CLI use to read data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.loader import ImageSet
from resnetlab.errors import UserError

SPEC_HELP = "cifar10, cifar100, folder:PATH, imagenet:PATH or synthetic[:TRAIN,TEST,SIZE,CLASSES]"


@dataclass
class DatasetSplits:
    """A loaded dataset: class names and the splits that exist (``val`` and ``test`` may be None).

    In-memory datasets fill ``train``/``val``/``test`` with :class:`ImageSet`; streamed ones
    (``imagenet:PATH``) leave them None and put their own split objects in ``streams``.
    """

    spec: str
    classes: list[str]
    train: ImageSet | None = None
    val: ImageSet | None = None
    test: ImageSet | None = None
    cache_path: Path | None = None
    streams: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the in-memory images, None for streamed data."""
        return None if self.train is None else tuple(self.train.images.shape[2:])


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


def _parse_synthetic(arg: str) -> DatasetSplits:
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


def load_dataset(
    spec: str, data_dir: str | Path | None = None, *, skip_bad_images: bool = False, download: bool = True
) -> DatasetSplits:
    """Load the dataset named by ``spec`` (see ``SPEC_HELP``); user mistakes raise :class:`UserError`."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        return _parse_synthetic(arg)
    if kind in ("cifar10", "cifar100") and not arg:
        from resnetlab.data.cifar import load_cifar

        return load_cifar(kind, data_dir, download=download)
    if kind == "folder" and arg:
        from resnetlab.data.folder import load_folder

        return load_folder(Path(arg), cache_dir=data_dir, skip_bad_images=skip_bad_images)
    if kind == "imagenet" and arg:
        from resnetlab.data.imagenet import load_imagenet_folder

        return load_imagenet_folder(Path(arg))
    raise UserError(f"unknown dataset {spec!r}: expected {SPEC_HELP}")


def split_train_val(train: ImageSet, val_size: int = 5000, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """The paper's held-out split (45k/5k on CIFAR-10): a fixed, seeded partition of the training set."""
    if not 0 < val_size < len(train):
        raise UserError(f"validation size {val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])
