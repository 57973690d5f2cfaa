"""Using a trained checkpoint: evaluate it on a dataset split, classify image files, plot confusion.

Everything comes from the checkpoint itself: the network (``model_config``), its class names, the
normaliser fitted on its training data and the input size, so no training code or config is needed.
The user-facing API behind ``resnetlab eval`` and ``resnetlab predict``; the evaluation loop itself is
:func:`resnetlab.engine.evaluate.evaluate`, and inference-time rewrites (BN folding) are
:mod:`resnetlab.weights.folding`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_open
from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import TensorBatches
from resnetlab.data.splits import DatasetSplits
from resnetlab.engine.distributed import select_device
from resnetlab.engine.evaluate import FlipViews, TenCropBatches, evaluate
from resnetlab.engine.precision import NumericMode, choose_mode
from resnetlab.engine.run_data import eval_sets
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError


@dataclass
class Evaluation:
    """The result of :func:`evaluate_checkpoint` with what it was computed on."""

    split: str
    classes: list[str]
    ten_crop: bool
    result: dict[str, Any]  # see resnetlab.engine.evaluate.evaluate
    mode: NumericMode  # the precision and memory format it was computed in
    flip: bool = False  # each image averaged with its mirror


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


def evaluate_checkpoint(
    ckpt: dict[str, Any],
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    ten_crop: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    precision: str | None = None,
    memory_format: str = "auto",
    flip: bool = False,
) -> Evaluation:
    """Evaluate a loaded checkpoint on ``split`` ("test" or "val"; default test when there is one).

    ``precision`` None means fp32, not auto: a test set evaluates in seconds, and its score must be
    the same number on every machine (weight cards are checked against it); bf16 moves a few images.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    dev = select_device(device)
    mode = choose_mode(dev, precision or "fp32", memory_format)
    if precision is None:
        mode = replace(mode, reason="fp32: evaluation's default, the same score on every machine")
    name, batches = checkpoint_batches(
        ckpt,
        dataset=dataset,
        data_dir=data_dir,
        split=split,
        ten_crop=ten_crop,
        batch_size=batch_size,
        device=dev,
    )
    model = model_from_checkpoint(ckpt).to(dev)
    if flip and ten_crop:
        raise UserError("--flip and --ten-crop both choose the views of an image: give one of them")
    views = FlipViews(batches) if flip else batches
    result = evaluate(model, views, dev, len(ckpt["classes"]), amp=mode.amp, channels_last=mode.channels_last)
    return Evaluation(name, list(ckpt["classes"]), ten_crop, result, mode, flip)


def load_image(path: Path, image_size: list[int], imagenet_style: bool) -> torch.Tensor:
    """A uint8 (3, H, W) tensor of an image file at the checkpoint's input size.

    Small-image checkpoints (CIFAR-like) see the whole image resized; ImageNet-style ones the
    paper's test view: shorter side scaled to 256/224 of the crop, then the centre crop.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"image {path} is a directory, not an image file")
    if not path.is_file():
        raise UserError(f"image {path} does not exist")
    try:
        with warnings.catch_warnings():
            # The user named this file, so a large one is work, not an attack: no warning. Pillow
            # still refuses beyond twice its limit (DecompressionBombError, reported below).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as original:
                img = original.convert("RGB")
        h, w = image_size
        if imagenet_style:
            short = round(min(h, w) * 256 / 224)
            scale = short / min(img.size)
            img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))))
            left, top = (img.width - w) // 2, (img.height - h) // 2
            img = img.crop((left, top, left + w, top + h))
        else:
            img = img.resize((w, h), Image.BILINEAR)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None
    return data.view(h, w, 3).permute(2, 0, 1).contiguous()


@torch.no_grad()
def predict_images(ckpt: dict[str, Any], paths: list[Path], top: int = 5) -> list[list[tuple[str, float]]]:
    """For each image file, the ``top`` most probable classes as (class name, probability)."""
    images = [
        load_image(
            p,
            list(ckpt["image_size"]),
            str(ckpt.get("config", {}).get("dataset", "")).startswith("imagenet:"),
        )
        for p in paths
    ]
    model = model_from_checkpoint(ckpt)
    normalizer = Normalizer.from_state_dict(ckpt["normalizer"])
    probs = torch.softmax(model(normalizer(torch.stack(images))), dim=1)
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    classes = list(ckpt["classes"])
    return [
        [(classes[i], float(v)) for v, i in zip(vs, ix, strict=True)]
        for vs, ix in zip(values, indices, strict=True)
    ]


def save_confusion_png(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """A confusion-matrix heat map (rows true class, columns prediction) as a PNG, written atomically."""
    from matplotlib.figure import Figure

    n = len(classes)
    fig = Figure(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n) if n <= 30 else (10, 9))
    ax = fig.add_subplot()
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=100)
