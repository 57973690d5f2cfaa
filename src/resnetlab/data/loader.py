"""Device-resident batches of an in-memory image set, resumable at any step and shardable by rank.

Every batch is a pure function of (seed, epoch, step): the shuffle comes from a generator seeded by
(seed, epoch) and the augmentation of step ``s`` from one seeded by (seed, epoch, s). Resuming at
step ``s`` therefore needs no saved RNG state, and ``world_size`` ranks that draw the same global
batch and each keep a disjoint slice see exactly what a single process would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from resnetlab.data.augment import Normalizer, apply_crop_flip, draw_crop_flip

Batch = tuple[torch.Tensor, torch.Tensor]
EVAL_ORDER_SEED = 20151210  # the paper's arXiv date: any fixed value, so every run evaluates alike


@dataclass
class ImageSet:
    """Decoded images and labels: uint8 (N, C, H, W) and int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: torch.Tensor) -> ImageSet:
        """The images at ``indices`` (a new ImageSet sharing nothing with this one)."""
        return ImageSet(self.images[indices], self.labels[indices])


class BatchDraws(NamedTuple):
    """The random choices behind one global batch, drawn on the CPU."""

    indices: torch.Tensor  # (B,) int64 image indices
    offsets: torch.Tensor | None  # (B, 2) crop offsets, None without augmentation
    flips: torch.Tensor | None  # (B,) bool


class Batches(Protocol):
    """What the training engine iterates: an epoch from a given step, and its length."""

    batches_per_epoch: int

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start``, ``start + 1``, ... of ``epoch`` as (normalised float images, labels)."""
        ...


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a tuple such as (seed, epoch, step): the one source of every shuffle
    and augmentation draw, so anything that replays a run's batches (resume, another rank, the GPU
    fleet benchmark) gets them bit for bit."""
    # Distinct streams per tuple; the large multiplier keeps the tuples apart.
    value = 0
    for p in parts:
        value = (value * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


class TensorBatches:
    """Batches of an :class:`ImageSet` held on ``device``, with the paper's CIFAR augmentation.

    Training: a fresh shuffle each epoch, full batches only (the paper counts iterations of 128),
    pad-4 random crop and flip when ``augment``. Evaluation: every image once, unaugmented, in one
    fixed shuffled order (so any prefix is a fair sample).
    With ``world_size`` > 1 each rank yields its own contiguous slice of every global batch.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        normalizer: Normalizer,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        augment: bool = True,
        pad: int = 4,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be a positive multiple of {world_size} ranks")
        if train and len(data) < batch_size:
            raise ValueError(
                f"the training split has {len(data)} images, fewer than one batch of {batch_size}"
            )
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.normalizer = normalizer
        self.train, self.seed, self.augment, self.pad = train, seed, augment and train, pad
        self.rank, self.world_size = rank, world_size
        n = len(data)
        self.batches_per_epoch = n // batch_size if train else -(-n // batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def order(self, epoch: int) -> torch.Tensor:
        """The order in which ``epoch`` visits the images (a fixed one for evaluation)."""
        if not self.train:
            # A fixed shuffle, the same for every run: image folders are sorted by class, so the
            # first batches in file order would make a partial evaluation (eval_limit) one class.
            return torch.randperm(self.images.shape[0], generator=seeded_generator(EVAL_ORDER_SEED))
        return torch.randperm(self.images.shape[0], generator=seeded_generator(self.seed, epoch))

    def draws(self, epoch: int, step: int, order: torch.Tensor | None = None) -> BatchDraws:
        """What global batch ``step`` of ``epoch`` takes: image indices, crop offsets and flips (None
        without augmentation). ``order`` is the epoch's shuffle, when the caller already has it."""
        order = self.order(epoch) if order is None else order
        idx = order[step * self.batch_size : (step + 1) * self.batch_size]
        if not self.augment:
            return BatchDraws(idx, None, None)
        offsets, flips = draw_crop_flip(len(idx), seeded_generator(self.seed, epoch, step), self.pad)
        return BatchDraws(idx, offsets, flips)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for step in range(start, self.batches_per_epoch):
            idx, offsets, flips = self.draws(epoch, step, order)
            local = len(idx) // self.world_size if self.train else None
            if local is not None:
                part = slice(self.rank * local, (self.rank + 1) * local)
            else:  # evaluation: a strided share, so every image is seen by exactly one rank
                part = slice(self.rank, None, self.world_size)
            idx = idx[part].to(self.device)
            x = self.images[idx]
            if offsets is not None:
                x = apply_crop_flip(x, offsets[part], flips[part], self.pad)
            yield self.normalizer(x), self.labels[idx]

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)
