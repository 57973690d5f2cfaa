"""Image files classified by a trained checkpoint: ``resnetlab predict``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.augment import Normalizer
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError


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
