"""Dataset specs (``cifar10``, ``cifar100``, ``folder:PATH``, ``imagenet:PATH``, ``synthetic``) and
:func:`load_dataset`, the one entry point the engine and the CLI use to read data.

This dispatcher sits above the loaders, which import only :mod:`resnetlab.data.splits`. It imports
each loader when its spec is used: the folder and ImageNet loaders pull in torchvision and PIL
(about a second on the reference machine), which ``resnetlab --help`` and CIFAR runs should not pay.
"""

from __future__ import annotations

from pathlib import Path

from resnetlab.data.splits import DatasetSplits
from resnetlab.data.synthetic import parse_synthetic
from resnetlab.errors import UserError

SPEC_HELP = "cifar10, cifar100, folder:PATH, imagenet:PATH or synthetic[:TRAIN,TEST,SIZE,CLASSES]"


def load_dataset(
    spec: str, data_dir: str | Path | None = None, *, skip_bad_images: bool = False, download: bool = True
) -> DatasetSplits:
    """Load the dataset named by ``spec`` (see ``SPEC_HELP``); user mistakes raise :class:`UserError`."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        return parse_synthetic(arg)
    if kind in ("cifar10", "cifar100") and not arg:
        from resnetlab.data.cifar import load_cifar

        return load_cifar(kind, data_dir, download=download)
    if kind == "folder" and arg:
        from resnetlab.data.folder import load_folder

        return load_folder(Path(arg), cache_dir=data_dir, skip_bad_images=skip_bad_images)
    if kind == "imagenet" and arg:
        from resnetlab.data.imagenet import load_imagenet_folder

        return load_imagenet_folder(Path(arg))
    raise UserError(f"unknown dataset {spec!r}: expected {SPEC_HELP}")
