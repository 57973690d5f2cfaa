"""Loading weights: one loader for every way of naming them, and the model they make.

:func:`load_weights` turns any reference into the checkpoint-like dict the engine consumes (see
``engine.checkpoint.REQUIRED_KEYS``): a checkpoint file, a run directory, an exported or converted
directory or ``.safetensors`` file, ``pretrained:NAME[:TAG]``, or ``akamaster:NAME``. Registry
weights are verified on every load: an in-package file against its card's SHA-256 and its config JSON
against the card; a publisher's file is downloaded and converted once, into
``$RESNETLAB_CACHE/weights`` (default ``~/.cache/resnetlab/weights``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.cache import user_cache_dir
from resnetlab.download import download_file, file_digest, matches
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.models import ResNet
from resnetlab.weights.card import SCHEME, WeightsCard
from resnetlab.weights.convert import CONVERTERS
from resnetlab.weights.export import checkpoint_from_export, export_config, export_safetensors
from resnetlab.weights.registry import get_weights, list_weights, package_file

ENV_CACHE = "RESNETLAB_CACHE"
WEIGHTS_HELP = (
    "a checkpoint file, a run directory, exported or converted weights (NAME.safetensors or its "
    "directory), pretrained:NAME[:TAG] or akamaster:NAME (see `resnetlab models --pretrained`)"
)


def weights_dir() -> Path:
    """Where downloaded and converted weights are kept: ``$RESNETLAB_CACHE/weights``, else under
    ``$XDG_CACHE_HOME/resnetlab`` or ``~/.cache/resnetlab``."""
    root = os.environ.get(ENV_CACHE)
    return (Path(root).expanduser() if root else user_cache_dir()) / "weights"


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
        path = package_file(card)
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
    tags = {c.tag for c in list_weights() if c.model == name}
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
