"""The paper's CIFAR augmentation and normalisation, vectorised over a batch on its own device.

"4 pixels are padded on each side, and a 32x32 crop is randomly sampled from the padded image or its
horizontal flip" (Section 4.2). Every random choice of a batch comes from one ``torch.Generator``, so
the same seed gives the same batches; no per-sample Python runs in the training loop.
"""

from __future__ import annotations

import torch


def draw_crop_flip(
    n: int, generator: torch.Generator, pad: int = 4, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of :func:`random_crop_flip` for ``n`` images: (offsets (n, 2), flips (n,)).

    Drawn on the CPU so the same seed gives the same batches on every device; a distributed loader
    draws for the whole global batch and each rank applies its own slice.
    """
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return offsets, flips


def apply_crop_flip(
    images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4
) -> torch.Tensor:
    """Zero-pad ``pad`` pixels on each side, crop the original size at ``offsets``, flip where asked.

    ``images`` is (B, C, H, W) of any dtype on any device; one gather does the whole batch.
    """
    b, _, h, w = images.shape
    device = images.device
    offsets, flips = offsets.to(device), flips.to(device)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=device)  # (B, H)
    cols = torch.arange(w, device=device).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1, None]  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None]
    # Advanced indexing over (batch, row, col) with the channel dim kept as a slice: (B, H, W, C).
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Pad, randomly crop and randomly flip a batch: the paper's CIFAR training augmentation."""
    offsets, flips = draw_crop_flip(images.shape[0], generator, pad, flip)
    return apply_crop_flip(images, offsets, flips, pad)


class Normalizer:
    """Mean subtraction (and optional division by a std) fitted on the training split.

    ``mode="per-pixel"`` subtracts the mean image, as the paper does for CIFAR and ImageNet;
    ``mode="per-channel"`` subtracts the per-channel mean and divides by the per-channel std (the
    common modern alternative). Input is uint8 in [0, 255]; output is float32 in those units / 255.
    """

    MODES = ("per-pixel", "per-channel")

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None, mode: str) -> None:
        if mode not in self.MODES:
            raise ValueError(f"normalisation must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.mean = mean.float()
        self.std = None if std is None else std.float()

    @classmethod
    def fit(cls, images: torch.Tensor, mode: str = "per-pixel") -> Normalizer:
        """Fit on uint8 training images (N, C, H, W), in chunks so no float copy of all of them is made."""
        total = torch.zeros(images.shape[1:], dtype=torch.float64)
        square = torch.zeros(images.shape[1], dtype=torch.float64)
        for chunk in images.split(4096):
            chunk = chunk.to(torch.float64) / 255.0
            total += chunk.sum(0)
            square += chunk.pow(2).sum((0, 2, 3))
        n = images.shape[0]
        mean_image = total / n
        if mode == "per-pixel":
            return cls(mean_image, None, mode)
        channel_mean = mean_image.mean((1, 2))
        pixels = n * images.shape[2] * images.shape[3]
        channel_std = (square / pixels - channel_mean.pow(2)).clamp_min(1e-12).sqrt()
        return cls(channel_mean[:, None, None], channel_std[:, None, None], mode)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised floats of the default dtype (float32 unless a caller set
        another, as the float64 reference tests do) on the images' device."""
        mean = self.mean.to(images.device)
        out = images.to(torch.get_default_dtype()).div_(255.0).sub_(mean)
        if self.std is not None:
            out.div_(self.std.to(images.device))
        return out

    def state_dict(self) -> dict:
        """Plain tensors and strings, for checkpoints that load with ``weights_only=True``."""
        return {
            "mode": self.mode,
            "mean": self.mean.cpu(),
            "std": None if self.std is None else self.std.cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        """Rebuild from :meth:`state_dict`."""
        return cls(state["mean"], state["std"], state["mode"])
