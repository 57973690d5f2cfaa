"""A trained checkpoint evaluated on a dataset split: ``resnetlab eval`` and the weight cards' checks.

The evaluation loop itself is :func:`resnetlab.engine.evaluate.evaluate` (the trainer's too); the
batches come from :mod:`resnetlab.evaluation.batches`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from resnetlab.engine.distributed import select_device
from resnetlab.engine.evaluate import FlipViews, evaluate
from resnetlab.engine.precision import NumericMode, choose_mode
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.evaluation.batches import checkpoint_batches


@dataclass
class Evaluation:
    """The result of :func:`evaluate_checkpoint` with what it was computed on."""

    split: str
    classes: list[str]
    ten_crop: bool
    result: dict[str, Any]  # see resnetlab.engine.evaluate.evaluate
    mode: NumericMode  # the precision and memory format it was computed in
    flip: bool = False  # each image averaged with its mirror


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
