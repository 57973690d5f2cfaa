"""Other projects' CIFAR ResNet checkpoints as resnetlab nets that compute exactly the same function.

akamaster/pytorch_resnet_cifar10 (Yerlan Idelbayev, BSD-2-Clause) publishes ResNet-20/32/44/56/110/1202
trained on CIFAR-10. A file there is a ``torch.save`` of ``{"state_dict": ..., "best_prec1": ...}``
whose keys carry DataParallel's ``module.`` prefix; below it the names are ours (``conv1``, ``bn1``,
``layerS.B.conv1/bn1/conv2/bn2``) except the classifier, ``linear`` where we say ``fc``.

The one real difference is option A. Where a stage doubles the channels C -> 2C, their shortcut pads
the subsampled identity with C/2 zero channels on *both* sides, so it lives in channels [C/2, 3C/2)
of the block output; ours pads after the data and keeps it in [0, C). Inside a stage every shortcut
is the identity, so one permutation of the stage's channels turns their residual stream into ours:
it is applied to what writes the stream (each block's conv2 and bn2), to what reads it (the next
block's conv1, and the classifier's columns after the last stage). The block-internal channels (conv1
out, bn1) need no change. The result is our standard ``build_model(NAME)``: no special padding mode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from resnetlab.download import file_digest
from resnetlab.engine.checkpoint import load_plain
from resnetlab.errors import UserError
from resnetlab.models import ResNet, build_model

AKAMASTER = "akamaster"
AKAMASTER_REPO = "https://github.com/akamaster/pytorch_resnet_cifar10"
AKAMASTER_PUBLISHER = "Yerlan Idelbayev (akamaster/pytorch_resnet_cifar10)"
AKAMASTER_LICENSE = "BSD-2-Clause"
AKAMASTER_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")
# Their trainer.py normalises with the ImageNet statistics, per channel, after ToTensor (x / 255).
AKAMASTER_MEAN = (0.485, 0.456, 0.406)
AKAMASTER_STD = (0.229, 0.224, 0.225)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.(conv1|conv2|bn2)\.")


def read_akamaster(path: Path) -> dict[str, torch.Tensor]:
    """Their state dict, ``module.`` prefixes removed; refuses anything but tensors and plain types."""
    state = load_plain(path, "akamaster checkpoint")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    tensors = isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
    if not tensors:
        raise UserError(
            f"{path} is not an akamaster/pytorch_resnet_cifar10 checkpoint "
            "(expected a dict with a 'state_dict' of tensors)"
        )
    # Their files predate BN's num_batches_tracked; a re-saved one may have it. It plays no part in eval.
    return {
        k.removeprefix("module."): v
        for k, v in state.items()
        if isinstance(k, str) and not k.endswith("num_batches_tracked")
    }


def _their_name(ours: str) -> str:
    return "linear." + ours.removeprefix("fc.") if ours.startswith("fc.") else ours


def _skeleton(name: str) -> ResNet:
    """``build_model(name)`` on the meta device: its structure without allocating or initialising."""
    with torch.device("meta"):
        return build_model(name)


def _layout(name: str) -> dict[str, torch.Size]:
    """Their key -> shape for our ``name``, num_batches_tracked aside."""
    ours = _skeleton(name).state_dict()
    return {_their_name(k): v.shape for k, v in ours.items() if not k.endswith("num_batches_tracked")}


def _check_layout(theirs: dict[str, torch.Tensor], name: str, path: Path) -> None:
    expected = _layout(name)
    if set(theirs) != set(expected):
        for other in AKAMASTER_MODELS:
            if other != name and set(theirs) == set(_layout(other)):
                raise UserError(f"{path} holds akamaster's {other}, not {name}: pass --model {other}")
        extra, missing = sorted(set(theirs) - set(expected)), sorted(set(expected) - set(theirs))
        detail = "; ".join(
            f"{label} {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
            for label, keys in (("unexpected", extra), ("missing", missing))
            if keys
        )
        raise UserError(f"{path} is not akamaster's {name} layout ({detail})")
    for key, shape in expected.items():
        if theirs[key].shape != shape:
            got = tuple(theirs[key].shape)
            raise UserError(f"{path}: {key} has shape {got}, but akamaster's {name} has {tuple(shape)}")


def stream_permutations(config: dict[str, Any]) -> list[torch.Tensor]:
    """Per stage, ``perm`` with: our channel i of the residual stream = their channel ``perm[i]``.

    A C -> 2C stage puts their identity at [C/2, 3C/2) in the order the previous stage left it, so
    ``perm`` is the previous one shifted by C/2, followed by their zero-padded channels.
    """
    perm = torch.arange(config["stem_width"])
    perms = []
    for width in config["widths"]:
        channels = len(perm)
        if width != channels:
            offset = width // 4  # their F.pad(..., (0, 0, 0, 0, planes // 4, planes // 4))
            if channels + 2 * offset != width:
                raise ValueError(f"their option A cannot take {channels} channels to {width}")
            padded = [c for c in range(width) if not offset <= c < offset + channels]
            perm = torch.cat([perm + offset, torch.tensor(padded)])
        perms.append(perm)
    return perms


def from_akamaster(theirs: dict[str, torch.Tensor], name: str, path: Path) -> dict[str, torch.Tensor]:
    """The state dict of our ``build_model(name)`` that computes what their net computes."""
    if name not in AKAMASTER_MODELS:
        raise UserError(f"akamaster publishes {', '.join(AKAMASTER_MODELS)}; {name!r} is not one of them")
    _check_layout(theirs, name, path)
    model = _skeleton(name)
    ours = model.state_dict()
    perms = stream_permutations(model.config)
    stem = torch.arange(model.config["stem_width"])
    state = {}
    for key, reference in ours.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=reference.dtype)
            continue
        tensor = theirs[_their_name(key)].to(reference.dtype)
        if key == "fc.weight":
            tensor = tensor[:, perms[-1]]
        elif m := _BLOCK_KEY.match(key):
            stage, block, layer = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
            if layer == "conv1":  # reads the stream: the previous stage's order in a stage's first block
                before = perms[stage] if block else (perms[stage - 1] if stage else stem)
                tensor = tensor[:, before]
            else:  # conv2 and bn2 write the stream
                tensor = tensor[perms[stage]]
        state[key] = tensor.contiguous()
    return state


def convert_akamaster(path: Path, name: str, source: str | None = None) -> dict[str, Any]:
    """A checkpoint-like dict (as ``engine.checkpoint.load_checkpoint`` returns) of their file.

    ``source`` is where the file came from (default: its path), recorded with its SHA-256, the
    publisher and the licence in the dict's ``provenance``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist (give one of akamaster's .th files)")
    return {
        "model": from_akamaster(read_akamaster(path), name, path),
        "model_name": name,
        "model_config": _skeleton(name).config,
        "classes": list(CIFAR10_CLASSES),
        "image_size": [32, 32],
        "normalizer": {
            "mode": "per-channel",
            "mean": torch.tensor(AKAMASTER_MEAN).view(3, 1, 1),
            "std": torch.tensor(AKAMASTER_STD).view(3, 1, 1),
        },
        "config": {"dataset": "cifar10"},
        "iteration": None,
        "provenance": {
            "converted_from": AKAMASTER,
            "publisher": AKAMASTER_PUBLISHER,
            "license": AKAMASTER_LICENSE,
            "source": source or str(path),
            "source_sha256": file_digest(path),
        },
    }


CONVERTERS = {AKAMASTER: convert_akamaster}
