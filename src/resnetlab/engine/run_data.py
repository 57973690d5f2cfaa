"""The data of a run: load the dataset, carve the validation split, fit the normaliser, make batches."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import ImageSet, TensorBatches
from resnetlab.data.splits import DatasetSplits, split_train_val
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.distributed import DistContext, select_device
from resnetlab.errors import UserError

# Evaluation needs no gradients, so it can take larger batches than training.
EVAL_BATCH_FACTOR = 2


@dataclass
class RunData:
    """Everything the trainer reads: batches for training and evaluation and what describes them."""

    train: Any  # a resnetlab.data.loader.Batches
    eval: Any
    eval_split: str  # "val" or "test"
    eval_images: int
    classes: list[str]
    normalizer: Normalizer
    image_size: list[int]  # [H, W] of the network's input
    test: Any | None = None  # the test split, when evaluation during training uses "val"
    test_images: int = 0


def eval_sets(splits: DatasetSplits, val_split: int) -> tuple[ImageSet, list[tuple[str, ImageSet]]]:
    """(training images, [(split name, images), ...]): the first split is the one training watches.

    ``val_split > 0`` holds that many training images out as "val" (the paper's 45k/5k split, fixed
    across seeds) and adds "test" if the dataset has one; 0 trains on everything and evaluates on
    "test" (or the dataset's own "val" when it has no test split).
    """
    train = splits.train
    if val_split > 0:
        if val_split >= len(train):
            raise UserError(
                f"--val-split {val_split} leaves no training images ({splits.spec} has {len(train)})"
            )
        train, val = split_train_val(train, val_split)
        evals = [("val", val)] + ([("test", splits.test)] if splits.test is not None else [])
    elif splits.test is not None:
        evals = [("test", splits.test)]
    elif splits.val is not None:
        evals = [("val", splits.val)]
    else:
        raise UserError(f"dataset {splits.spec} has no test or val split: use --val-split N to hold one out")
    return train, evals


def load_run_data(config: TrainConfig, ctx: DistContext) -> RunData:
    """Load and batch the data of ``config`` for this rank (batch size is global, split by rank)."""
    splits = load_dataset(config.dataset, config.data_dir)
    batch = config.recipe.batch_size
    if batch % ctx.world_size:
        raise UserError(f"batch size {batch} must be a multiple of the {ctx.world_size} processes")
    if splits.train is None:
        return _stream_data(splits, config, ctx)
    train, evals = eval_sets(splits, config.val_split)
    if len(train) < batch:
        raise UserError(
            f"the training split of {config.dataset} has {len(train)} images, fewer than one batch of "
            f"{batch} (lower --batch-size or --val-split)"
        )
    normalizer = Normalizer.fit(train.images, config.normalization)

    def batches(data: ImageSet, training: bool) -> TensorBatches:
        size = batch if training else batch * EVAL_BATCH_FACTOR
        return TensorBatches(
            data,
            size,
            normalizer,
            train=training,
            device=ctx.device,
            seed=config.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )

    return RunData(
        train=batches(train, True),
        eval=batches(evals[0][1], False),
        eval_split=evals[0][0],
        eval_images=len(evals[0][1]),
        classes=list(splits.classes),
        normalizer=normalizer,
        image_size=list(train.images.shape[2:]),
        test=batches(evals[1][1], False) if len(evals) > 1 else None,
        test_images=len(evals[1][1]) if len(evals) > 1 else 0,
    )


def _stream_data(splits: DatasetSplits, config: TrainConfig, ctx: DistContext) -> RunData:
    """ImageNet-style data decoded per batch (``imagenet:PATH``): the folder's own val/test splits."""
    from resnetlab.data.imagenet import CROP, fit_normalizer, imagenet_batches

    if config.val_split:
        raise UserError(f"--val-split is for in-memory datasets; {config.dataset} has its own val split")
    if "train" not in splits.streams:
        raise UserError(f"dataset {config.dataset} has no train split")
    names = [name for name in ("val", "test") if name in splits.streams]
    if not names:
        raise UserError(f"dataset {config.dataset} has no val or test split to evaluate on")
    workers = min(8, os.cpu_count() or 1)
    normalizer = fit_normalizer(splits.streams["train"], mode=config.normalization, workers=workers)
    batch = config.recipe.batch_size
    common = {
        "seed": config.seed,
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "device": ctx.device,
        "workers": workers,
    }

    def batches(name: str, training: bool) -> Any:
        size = batch if training else batch * EVAL_BATCH_FACTOR
        return imagenet_batches(splits.streams[name], size, train=training, normalizer=normalizer, **common)

    return RunData(
        train=batches("train", True),
        eval=batches(names[0], False),
        eval_split=names[0],
        eval_images=len(splits.streams[names[0]]),
        classes=list(splits.classes),
        normalizer=normalizer,
        image_size=[CROP, CROP],
        test=batches("test", False) if names[1:] else None,
        test_images=len(splits.streams["test"]) if names[1:] else 0,
    )


def build_data(
    config: TrainConfig, rank: int = 0, world_size: int = 1
) -> tuple[Any, Any, list[str], Normalizer]:
    """(train batches, eval batches, class names, normaliser) of ``config`` for one rank of ``world_size``."""
    data = load_run_data(config, DistContext(rank, world_size, select_device(config.device, rank)))
    return data.train, data.eval, data.classes, data.normalizer
