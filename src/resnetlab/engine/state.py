"""Whether a checkpoint's weights fit a network, and the trained network of a checkpoint."""

from __future__ import annotations

from typing import Any

import torch

from resnetlab.errors import UserError
from resnetlab.models import ResNet


def check_weights(model: torch.nn.Module, weights: Any) -> None:
    """Raise a one-line :class:`UserError` unless ``weights`` is a state dict that fits ``model``."""
    if not isinstance(weights, dict):
        raise UserError(f"the checkpoint's weights are a {type(weights).__name__}, not a state dict")
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [
        f"{k} is {tuple(weights[k].shape)}, not {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and getattr(weights[k], "shape", None) != v.shape
    ]
    for what, names in (
        ("{} missing tensor(s)", missing),
        ("{} unexpected tensor(s)", unexpected),
        ("{} tensor(s) of another shape", reshaped),
    ):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            problems.append(f"{what.format(len(names))} ({names[0]}{more})")
    if problems:
        raise UserError(
            "the checkpoint's weights do not fit its network (another architecture or class count?): "
            + "; ".join(problems)
        )


def model_from_checkpoint(ckpt: dict[str, Any]) -> ResNet:
    """The trained network of a loaded checkpoint, in eval mode on the CPU."""
    try:
        model = ResNet(**ckpt["model_config"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"the checkpoint's model config is invalid: {str(exc).splitlines()[0]}") from None
    outputs, classes = model.config["num_classes"], len(ckpt["classes"])
    if outputs != classes:
        raise UserError(f"the checkpoint names {classes} classes but its network has {outputs} outputs")
    check_weights(model, ckpt["model"])
    model.load_state_dict(ckpt["model"])
    return model.eval()
