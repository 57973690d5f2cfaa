"""The batches a trained net is evaluated or measured on: a split of a dataset prepared as its
checkpoint says (its normaliser, classes and input size, the run's own validation split held out).

Everything comes from the checkpoint itself, so no training code or config is needed; the studies
of trained nets (:mod:`resnetlab.experiments.trained_nets`) take their test batches from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import TensorBatches
from resnetlab.data.splits import DatasetSplits
from resnetlab.engine.distributed import select_device
from resnetlab.engine.evaluate import TenCropBatches
from resnetlab.engine.run_data import eval_sets
from resnetlab.errors import UserError


@dataclass(frozen=True)
class _Loading:
    """How evaluation batches are made: views per image, batch size and device."""

    ten_crop: bool
    batch_size: int
    device: torch.device


def _split_batches(
    ckpt: dict[str, Any], dataset: str, data_dir: str | None, split: str | None, how: _Loading
):
    """(split name, batches) of ``dataset`` as the checkpoint's run split it (its --val-split)."""
    config = ckpt.get("config", {})
    splits = load_dataset(dataset, data_dir)
    if splits.classes != list(ckpt["classes"]):
        raise UserError(
            f"dataset {dataset} has classes {splits.classes[:5]}..., but the checkpoint was trained on "
            f"{list(ckpt['classes'])[:5]}..."
        )
    normalizer = Normalizer.from_state_dict(ckpt["normalizer"])
    if splits.train is None:
        return _stream_split(splits, split, normalizer, how)
    val_split = config.get("val_split", 0) if dataset == config.get("dataset") else 0
    available = dict(eval_sets(splits, val_split)[1])
    if splits.val is not None:
        available.setdefault("val", splits.val)
    name = split or ("test" if "test" in available else "val")
    if name not in available:
        raise UserError(f"dataset {dataset} has no {name} split here (available: {', '.join(available)})")
    images = available[name]
    if list(images.images.shape[2:]) != list(ckpt["image_size"]):
        raise UserError(
            f"the {name} images of {dataset} are {tuple(images.images.shape[2:])}, but the checkpoint "
            f"expects {tuple(ckpt['image_size'])}"
        )
    if how.ten_crop:
        return name, TenCropBatches(images, how.batch_size, normalizer, device=how.device)
    return name, TensorBatches(images, how.batch_size, normalizer, train=False, device=how.device)


def _stream_split(splits: DatasetSplits, split: str | None, normalizer: Normalizer, how: _Loading):
    from resnetlab.data.imagenet import imagenet_batches

    name = split or ("test" if "test" in splits.streams else "val")
    if name not in splits.streams or name == "train":
        raise UserError(f"dataset {splits.spec} has no {name} split (available: {', '.join(splits.streams)})")
    batches = imagenet_batches(
        splits.streams[name],
        how.batch_size,
        train=False,
        seed=0,
        ten_crop=how.ten_crop,
        normalizer=normalizer,
        device=how.device,
    )
    return name, batches


def checkpoint_batches(
    ckpt: dict[str, Any],
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    ten_crop: bool = False,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> tuple[str, Any]:
    """(split name, unaugmented batches) of ``split`` ("test" or "val"; default test when there is
    one) of ``dataset`` (default: the checkpoint's own), prepared as the checkpoint's net expects:
    its normaliser, classes and input size."""
    config = ckpt.get("config", {})
    dataset = dataset or config.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not name its dataset: give --dataset")
    dev = device if isinstance(device, torch.device) else select_device(device)
    how = _Loading(ten_crop, batch_size, dev)
    return _split_batches(ckpt, dataset, data_dir or config.get("data_dir"), split, how)
