"""What every dataset loader returns: :class:`DatasetSplits`, and the paper's train/validation split.

A leaf of the data package: the loaders (cifar, folder, imagenet, synthetic) build DatasetSplits and
the dispatcher in :mod:`resnetlab.data.datasets` sits above them, so nothing here imports a loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.loader import ImageSet
from resnetlab.errors import UserError


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


def split_train_val(train: ImageSet, val_size: int = 5000, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """The paper's held-out split (45k/5k on CIFAR-10): a fixed, seeded partition of the training set."""
    if not 0 < val_size < len(train):
        raise UserError(f"validation size {val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])
