"""ImageNet-style folders of large JPEGs (``imagenet:PATH``), streamed through DataLoader workers.

Same layout as ``folder:PATH`` (``train/<class>/*`` with ``val/`` and/or ``test/``), but images are
decoded per batch in worker processes instead of being cached. The paper's recipe (Section 3.4):

- train: shorter side resized to a random value in [256, 480], a random 224x224 crop, a random
  horizontal flip, AlexNet's PCA colour ("lighting") augmentation with std 0.1, mean subtraction;
- eval: shorter side 256 and the centre 224x224 crop, or the 10-crop test (four corners and the
  centre, and their flips) returned as (B, 10, 3, 224, 224) for the evaluator to average.

The mean is the per-pixel mean image (3, 224, 224), as in the paper, estimated by
:func:`fit_normalizer` from a fixed seeded sample of training images seen through the eval transform
(resize 256, centre crop): a mean over crops of random position and scale is nearly the same and this
keeps it deterministic. Every random choice for an image comes from a generator seeded by (seed,
epoch, image index), so batches do not depend on the number of workers, and ``epoch(e, start)``
resumes mid-epoch from nothing but (e, start).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from resnetlab.data.augment import Normalizer
from resnetlab.data.folder import decode_rgb, describe, scan_image_folder
from resnetlab.data.loader import EVAL_ORDER_SEED, Batch, seeded_generator
from resnetlab.data.splits import DatasetSplits
from resnetlab.errors import UserError

CROP = 224
EVAL_RESIZE = 256
TRAIN_RESIZE = (256, 480)  # shorter side, inclusive range (Section 3.4)
LIGHTING_STD = 0.1
# Eigen-decomposition of the covariance of ImageNet RGB pixels in [0, 1] (AlexNet's PCA lighting).
EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)


@dataclass(frozen=True)
class SplitFiles:
    """One split of an image folder: the root, file paths relative to it and labels.

    Paths are held in one numpy bytes array (not a list of str) so worker processes forked from
    the main one share it without copying it page by page as reference counts change.
    """

    root: Path
    name: str
    files: np.ndarray  # dtype S: file-system-encoded paths relative to root
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> str:
        """The absolute path of image ``index``."""
        return os.path.join(self.root, os.fsdecode(self.files[index]))


def load_imagenet_folder(path: Path) -> DatasetSplits:
    """Check the layout of ``imagenet:PATH`` and list its files; nothing is decoded here."""
    layout = scan_image_folder(Path(path), stats=False)
    streams = {
        name: SplitFiles(
            layout.root,
            name,
            np.array([os.fsencode(f) for f in split.files]),
            np.array(split.labels, dtype=np.int64),
        )
        for name, split in layout.splits.items()
    }
    return DatasetSplits(f"imagenet:{path}", layout.classes, streams=streams)


class _Images(Dataset):
    """Decodes and transforms one image per key (epoch, index): uint8 crop(s), label, lighting alpha."""

    def __init__(self, split: SplitFiles, mode: str, seed: int) -> None:
        self.split, self.mode, self.seed = split, mode, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        epoch, index = key
        path = self.split.path(index)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=".*decoding and encoding capabilities of TorchVision"
                )
                image = torch.from_numpy(decode_rgb(path))
        except Exception as exc:  # any decoder failure: this file is unreadable
            raise UserError(f"cannot decode image {path} ({describe(exc)}): replace or delete it") from None
        alpha = torch.zeros(3)
        if self.mode == "train":
            g = seeded_generator(self.seed, epoch, index)
            short = int(torch.randint(TRAIN_RESIZE[0], TRAIN_RESIZE[1] + 1, (1,), generator=g))
            image = F.resize(image, [short], antialias=True)
            h, w = image.shape[-2:]
            top = int(torch.randint(0, h - CROP + 1, (1,), generator=g))
            left = int(torch.randint(0, w - CROP + 1, (1,), generator=g))
            image = F.crop(image, top, left, CROP, CROP)
            if torch.rand(1, generator=g) < 0.5:
                image = F.horizontal_flip(image)
            alpha = torch.randn(3, generator=g) * LIGHTING_STD
        else:
            image = F.resize(image, [EVAL_RESIZE], antialias=True)
            if self.mode == "ten_crop":
                image = torch.stack(F.ten_crop(image, [CROP, CROP]))
            else:
                image = F.center_crop(image, [CROP, CROP])
        return image, int(self.split.labels[index]), alpha


def lighting(alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet PCA colour shift per image: (B, 3) alphas -> (B, 3) RGB offsets in [0, 1] units."""
    return (alpha * EIGVAL.to(alpha.device)) @ EIGVEC.to(alpha.device).T


def _worker_message(exc: UserError) -> str:
    # A UserError raised in a DataLoader worker comes back wrapped with the worker's traceback;
    # keep only the original one-line message.
    last = str(exc).strip().splitlines()[-1]
    return last.split("UserError: ", 1)[-1]


def _loader(dataset: Dataset, batches: list[list[tuple[int, int]]], workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
    )


def fit_normalizer(
    split: SplitFiles, *, samples: int = 1000, seed: int = 0, workers: int = 0, mode: str = "per-pixel"
) -> Normalizer:
    """Fit a :class:`Normalizer` on a fixed seeded sample of ``samples`` training images at 224x224."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:samples]
    keys = [(0, int(i)) for i in order]
    chunks = [keys[i : i + 64] for i in range(0, len(keys), 64)]
    loader = _loader(_Images(split, "eval", seed), chunks, workers, pin=False)
    try:
        images = torch.cat([x for x, _, _ in loader])
    except UserError as exc:
        raise UserError(_worker_message(exc)) from None
    return Normalizer.fit(images, mode)


class StreamBatches:
    """The :class:`~resnetlab.data.loader.Batches` of an ImageNet-style split, decoded by workers.

    Train: a seeded shuffle per epoch, full batches only, each rank a contiguous slice of every
    global batch. Eval: every image once in a fixed shuffled order, each rank a strided share
    (as TensorBatches).
    """

    def __init__(
        self,
        split: SplitFiles,
        batch_size: int,
        normalizer: Normalizer,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        ten_crop: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be a positive multiple of {world_size} ranks")
        if train and ten_crop:
            raise ValueError("10-crop is an evaluation transform; use it with train=False")
        if train and len(split) < batch_size:
            raise UserError(
                f"{split.root}/{split.name} has {len(split)} images, fewer than one batch of {batch_size}"
            )
        self.split, self.batch_size, self.normalizer = split, batch_size, normalizer
        self.train, self.seed, self.rank, self.world_size = train, seed, rank, world_size
        self.workers, self.ten_crop, self.device = workers, ten_crop, torch.device(device)
        mode = "train" if train else ("ten_crop" if ten_crop else "eval")
        self.dataset = _Images(split, mode, seed)
        n = len(split)
        self.batches_per_epoch = n // batch_size if train else -(-n // batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _keys(self, epoch: int, start: int) -> list[list[tuple[int, int]]]:
        """This rank's (epoch, index) keys for batches ``start`` .. end of ``epoch``."""
        n = len(self.split)
        # Eval uses one fixed shuffle (as TensorBatches) so a partial evaluation is not one class.
        seed = (self.seed, epoch) if self.train else (EVAL_ORDER_SEED,)
        order = torch.randperm(n, generator=seeded_generator(*seed))
        local = self.batch_size // self.world_size
        out = []
        for step in range(start, self.batches_per_epoch):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            if self.train:
                idx = idx[self.rank * local : (self.rank + 1) * local]
            else:  # a strided share, so every image is seen by exactly one rank
                idx = idx[self.rank :: self.world_size]
            out.append([(epoch, int(i)) for i in idx])
        return out

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start``, ``start + 1``, ... of ``epoch`` as (normalised float images, labels)."""
        keys = self._keys(epoch, start)
        # Only the last eval batch can leave a rank with nothing (fewer images than ranks).
        empty_last = bool(keys) and not keys[-1]
        pin = self.device.type == "cuda"
        loader = _loader(self.dataset, keys[:-1] if empty_last else keys, self.workers, pin)
        try:
            for images, labels, alpha in loader:
                yield self._finish(images, labels, alpha)
        except UserError as exc:
            raise UserError(_worker_message(exc)) from None
        if empty_last:
            shape = (0, 10, 3, CROP, CROP) if self.ten_crop else (0, 3, CROP, CROP)
            yield (
                torch.zeros(shape, device=self.device),
                torch.zeros(0, dtype=torch.int64, device=self.device),
            )

    def _finish(self, images: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor) -> Batch:
        """Move to the device, normalise (and light) there: uint8 crosses the bus, not float."""
        x = images.to(self.device, non_blocking=True)
        if self.ten_crop:
            b = x.shape[0]
            return self.normalizer(x.flatten(0, 1)).unflatten(0, (b, 10)), labels.to(self.device)
        x = self.normalizer(x)
        if self.train:
            x += lighting(alpha.to(self.device))[:, :, None, None]
        return x, labels.to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


def imagenet_batches(
    split_files: SplitFiles,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int | None = None,
    ten_crop: bool = False,
    normalizer: Normalizer | None = None,
    device: torch.device | str = "cpu",
) -> StreamBatches:
    """Batches of an ``imagenet:PATH`` split with the paper's train or eval transform.

    ``normalizer`` defaults to the per-pixel mean fitted on ``split_files`` when ``train``; eval
    batches need the training split's normalizer. ``workers`` defaults to the CPU count (at most 8).
    """
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if normalizer is None:
        if not train:
            raise ValueError("evaluation batches need the training split's normalizer")
        normalizer = fit_normalizer(split_files, workers=workers)
    return StreamBatches(
        split_files,
        batch_size,
        normalizer,
        train=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        workers=workers,
        ten_crop=ten_crop,
        device=device,
    )
