"""The public constructors: ``create_model(name, pretrained=...)`` and the torch.hub entry points.

They sit above both the architectures (:mod:`resnetlab.models`) and the weights loader
(:mod:`resnetlab.weights.loading`, which builds nets to load into), so neither of those imports the
other's user-facing API and there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnetlab.errors import UserError
from resnetlab.models import ResNet, build_model, model_info
from resnetlab.weights.loading import pretrained_model


def create_model(name: str, pretrained: bool | str | Path = False, **overrides: Any) -> ResNet:
    """A registered network; keyword overrides replace its ResNet arguments.

    Example: ``create_model("resnet34", shortcut="C")`` or
    ``create_model("resnet50", bottleneck_stride="3x3")`` (torchvision's v1.5).

    ``pretrained`` loads weights and returns the net in eval mode: True for the model's default
    weights, a tag (``"akamaster"``), or a path to exported/converted weights or a checkpoint (see
    :mod:`resnetlab.weights` and ``resnetlab models --pretrained``). Weights fix the architecture,
    so they take no overrides.
    """
    if not pretrained:
        return build_model(name, **overrides)
    if overrides:
        raise UserError(f"pretrained weights fix the architecture of {name}: drop {sorted(overrides)}")
    return pretrained_model(name, pretrained)


def builder(name: str) -> Callable[..., ResNet]:
    """A named function that creates ``name`` (for torch.hub, which lists callables by name)."""
    info = model_info(name)

    def create(pretrained: bool | str | Path = False, **overrides: Any) -> ResNet:
        return create_model(name, pretrained, **overrides)

    kind = "residual" if info.spec["residual"] else "plain"
    create.__name__ = create.__qualname__ = name
    create.__doc__ = (
        f"{kind.capitalize()} {info.family} network of depth {info.depth} "
        f"(He et al. 2015, {info.source}); ``pretrained`` as in resnetlab.create_model, other keyword "
        "arguments override ResNet's."
    )
    return create
