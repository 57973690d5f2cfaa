"""Evaluation: top-1/top-5 error, loss, per-class accuracy and the confusion matrix, sharded by rank.

Batches may hold one view per image, (B, C, H, W), or several, (B, K, C, H, W) as ten-crop testing
gives: the softmax scores of the K views are averaged, as the paper does for its 10-crop results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.data.augment import Normalizer, apply_crop_flip
from resnetlab.data.loader import Batch, ImageSet
from resnetlab.engine.distributed import DistContext, wide_float
from resnetlab.engine.step import autocast_context


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Any,
    device: torch.device | str,
    num_classes: int,
    *,
    limit: int | None = None,
    ctx: DistContext | None = None,
    amp: str | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` (put in eval mode, then restored) on ``batches`` (an iterable of (x, y)).

    ``limit`` evaluates exactly that many images: the first of the batches' order, the last batch
    cut short. With ``ctx`` of several ranks, each evaluates its own share (a strided share of every
    global batch of ``batches.batch_size`` images, as the loaders give) and the sums are
    all-reduced. Returns top1_error, top5_error, loss (mean cross-entropy), images,
    per_class_accuracy (list; NaN for a class without images) and confusion (list of lists, rows =
    true class, columns = prediction).
    """
    device = torch.device(device)
    ctx = ctx or DistContext(0, 1, device)
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    wide = wide_float(device)
    sums = torch.zeros(3, dtype=wide, device=device)  # loss, top-1 correct, top-k correct
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    images = 0
    global_batch = getattr(batches, "batch_size", None)  # None: plain (x, y) pairs of one process
    seen = 0  # images of all ranks before this batch
    try:
        for x, y in batches:
            if limit is not None:
                # This rank's images among the first ``limit - seen`` of the global batch.
                keep = len(range(ctx.rank, limit - seen, ctx.world_size))
                if keep == 0:
                    break
                seen += global_batch or y.shape[0]
                x, y = x[:keep], y[:keep]
            log_probs = _log_scores(model, x.to(device), amp, channels_last)
            y = y.to(device)
            top = log_probs.topk(k, dim=1).indices
            sums[0] += F.nll_loss(log_probs, y, reduction="sum").to(wide)
            sums[1] += (top[:, 0] == y).sum()
            sums[2] += (top == y[:, None]).any(1).sum()
            confusion += torch.bincount(y * num_classes + top[:, 0], minlength=num_classes**2)
            images += y.shape[0]
    finally:
        model.train(was_training)
    counts = torch.tensor([images], dtype=torch.int64, device=device)
    ctx.all_reduce(sums)
    ctx.all_reduce(confusion)
    ctx.all_reduce(counts)
    return _result(sums.tolist(), int(counts.item()), confusion.view(num_classes, num_classes).cpu())


def _log_scores(model: nn.Module, x: torch.Tensor, amp: str | None, channels_last: bool) -> torch.Tensor:
    """Log-probabilities per image; several views (B, K, C, H, W) are averaged in probability."""
    views = x.shape[1] if x.dim() == 5 else 1
    flat = x.flatten(0, 1) if x.dim() == 5 else x
    flat = flat.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with autocast_context(flat.device, amp):
        logits = model(flat)
    log_probs = F.log_softmax(logits.float(), dim=1)
    if views == 1:
        return log_probs
    probs = log_probs.exp().view(x.shape[0], views, -1).mean(1)
    return probs.clamp_min(1e-12).log()


def _result(sums: list[float], images: int, confusion: torch.Tensor) -> dict[str, Any]:
    n = max(images, 1)
    totals = confusion.sum(1).double()
    per_class = torch.where(totals > 0, confusion.diagonal().double() / totals.clamp_min(1), math.nan)
    return {
        "top1_error": 1.0 - sums[1] / n,
        "top5_error": 1.0 - sums[2] / n,
        "loss": sums[0] / n,
        "images": images,
        "per_class_accuracy": per_class.tolist(),
        "confusion": confusion.tolist(),
    }


class FlipViews:
    """Every batch of ``batches`` with its mirror image as a second view: (B, 2, C, H, W), averaged in
    probability by :func:`evaluate` (test-time flip; not in the paper, which tests single views on
    CIFAR). Keeps the wrapped batches' ``batch_size`` for the sharded evaluation."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches
        self.batch_size = getattr(batches, "batch_size", None)

    def __iter__(self) -> Iterator[Batch]:
        for x, y in self.batches:
            yield torch.stack([x, x.flip(-1)], 1), y


class TenCropBatches:
    """Ten views of every image of an in-memory set: the four corners and the centre of the image
    padded by ``pad`` pixels, each also flipped (the 10-crop test of Krizhevsky et al., as the paper
    uses it, transposed to images stored at the network's input size). Yields (B, 10, C, H, W).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        normalizer: Normalizer,
        *,
        device: torch.device | str = "cpu",
        pad: int = 4,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.data, self.batch_size, self.normalizer = data, batch_size, normalizer
        self.device, self.pad = torch.device(device), pad
        self.rank, self.world_size = rank, world_size
        corners = [(0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad), (pad, pad)]
        self.offsets = torch.tensor(corners * 2)
        self.flips = torch.tensor([False] * 5 + [True] * 5)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.data)
        for start in range(0, n, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, n))[self.rank :: self.world_size]
            x = self.data.images[idx].to(self.device)
            b = x.shape[0]
            views = apply_crop_flip(
                x.repeat_interleave(10, 0), self.offsets.repeat(b, 1), self.flips.repeat(b), self.pad
            )
            yield self.normalizer(views).view(b, 10, *x.shape[1:]), self.data.labels[idx].to(self.device)
