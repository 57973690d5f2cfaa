"""The registry of the paper's networks: `build_model(name, **overrides)` and `list_models()`.

Architectures only: loading weights (``resnetlab.create_model(name, pretrained=...)``) lives a layer
above, in :mod:`resnetlab.weights.hub`, so this package imports nothing of the weights machinery.

Each entry is a dict of :class:`~resnetlab.models.resnet.ResNet` arguments plus what the paper says
about the net, so a new variant is one line and every entry is covered by the parametrized tests.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from resnetlab.errors import UserError, closest_names
from resnetlab.models.resnet import ResNet


@dataclass(frozen=True)
class ModelInfo:
    """A registered network: its ResNet arguments and the paper's figures for it (None if absent)."""

    name: str
    depth: int
    family: str  # "cifar" or "imagenet"
    spec: dict[str, Any] = field(default_factory=dict)
    paper_params: float | None = None  # parameters as the paper rounds them (Table 6), e.g. 0.27e6
    paper_macs: float | None = None  # multiply-adds (the paper's "FLOPs", Table 1), e.g. 1.8e9
    paper_error: float | None = None  # test error in %: CIFAR-10 Table 6, ImageNet 10-crop top-1
    source: str = ""


_REGISTRY: dict[str, ModelInfo] = {}

# CIFAR-10 (Section 4.2, Table 6): depth 6n+2, three stages of n basic blocks, option A.
_CIFAR_TABLE6 = {
    20: (0.27e6, 8.75),
    32: (0.46e6, 7.51),
    44: (0.66e6, 7.17),
    56: (0.85e6, 6.97),
    110: (1.7e6, 6.43),
    1202: (19.4e6, 7.93),
}
# ImageNet (Table 1 and Tables 2-4): block, blocks per stage, multiply-adds, 10-crop top-1 error.
_IMAGENET_TABLE1 = {
    18: ("basic", (2, 2, 2, 2), 1.8e9, 27.88),
    34: ("basic", (3, 4, 6, 3), 3.6e9, 24.52),
    50: ("bottleneck", (3, 4, 6, 3), 3.8e9, 22.85),
    101: ("bottleneck", (3, 4, 23, 3), 7.6e9, 21.75),
    152: ("bottleneck", (3, 8, 36, 3), 11.3e9, 21.43),
}
_IMAGENET_PLAIN_ERROR = {18: 27.94, 34: 28.54}  # Table 2, 10-crop top-1


def _register(info: ModelInfo) -> None:
    _REGISTRY[info.name] = info


for _depth, (_params, _error) in _CIFAR_TABLE6.items():
    _n = (_depth - 2) // 6
    _cifar = {
        "block": "basic",
        "layers": (_n,) * 3,
        "widths": (16, 32, 64),
        "stem": "cifar",
        "num_classes": 10,
        "shortcut": "A",
    }
    _register(
        ModelInfo(
            f"resnet{_depth}", _depth, "cifar", {**_cifar, "residual": True}, _params, None, _error, "Table 6"
        )
    )
    # The paper plots plain-20..56 (Fig. 6) but reports no plain error in Table 6.
    _register(
        ModelInfo(
            f"plain{_depth}", _depth, "cifar", {**_cifar, "residual": False}, _params, None, None, "Fig. 6"
        )
    )

for _depth, (_block, _layers, _macs, _error) in _IMAGENET_TABLE1.items():
    _imagenet = {
        "block": _block,
        "layers": _layers,
        "widths": (64, 128, 256, 512),
        "stem": "imagenet",
        "num_classes": 1000,
        "shortcut": "B",
        "bottleneck_stride": "1x1",
    }
    _register(
        ModelInfo(
            f"resnet{_depth}",
            _depth,
            "imagenet",
            {**_imagenet, "residual": True},
            None,
            _macs,
            _error,
            "Tables 1, 3",
        )
    )
    if _depth in _IMAGENET_PLAIN_ERROR:
        _register(
            ModelInfo(
                f"plain{_depth}",
                _depth,
                "imagenet",
                {**_imagenet, "residual": False},
                None,
                _macs,
                _IMAGENET_PLAIN_ERROR[_depth],
                "Tables 1, 2",
            )
        )


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, CIFAR nets first, each family by depth; ``pattern`` is a shell glob."""
    infos = sorted(_REGISTRY.values(), key=lambda i: (i.family != "cifar", not i.spec["residual"], i.depth))
    names = [i.name for i in infos]
    if pattern:
        names = [
            n
            for n in names
            if fnmatch.fnmatch(n, pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")
        ]
    return names


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; an unknown name is a :class:`UserError` with suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = closest_names(name, list(_REGISTRY)) or f" (see `resnetlab models`: {len(_REGISTRY)} nets)"
        raise UserError(f"unknown model {name!r}{hint}") from None


def build_model(name: str, **overrides: Any) -> ResNet:
    """A freshly initialised registered network; keyword overrides replace its ResNet arguments.

    Example: ``build_model("resnet34", shortcut="C")`` or
    ``build_model("resnet50", bottleneck_stride="3x3")`` (torchvision's v1.5).
    """
    spec = {**model_info(name).spec, **overrides}
    try:
        return ResNet(**spec)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build {name} with {overrides}: {exc}") from None
