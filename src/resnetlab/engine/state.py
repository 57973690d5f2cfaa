"""What a checkpoint holds and how a run or a bare model comes back from one."""

from __future__ import annotations

from typing import Any

import torch

from resnetlab.engine.checkpoint import rng_state, set_rng_state
from resnetlab.errors import UserError
from resnetlab.models import ResNet


def checkpoint_state(run: Any) -> dict[str, Any]:
    """The plain-typed state of a trainer (see ``engine.trainer._Trainer``) at its current iteration."""
    data = run.data
    return {
        "model": run.model.state_dict(),
        "model_name": run.config.model,
        "model_config": run.model.config,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "iteration": run.iteration,
        "epoch": run.epoch,
        "step_in_epoch": run.step_in_epoch,
        "rng": rng_state(),
        "config": run.config.to_dict(),
        "classes": list(data.classes),
        "normalizer": data.normalizer.state_dict(),
        "image_size": list(data.image_size),
        "metrics": list(run.metrics.rows),
        "meters": {"log": run.meter.state_dict(), "warmup": run.warm_meter.state_dict()},
        "elapsed_s": run.elapsed(),
    }


def restore_state(run: Any, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """Put a trainer back where ``ckpt`` was taken; returns the metrics rows logged until then."""
    check_weights(run.model, ckpt["model"])
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    run.iteration, run.epoch, run.step_in_epoch = ckpt["iteration"], ckpt["epoch"], ckpt["step_in_epoch"]
    run.meter.load_state_dict(ckpt["meters"]["log"])
    run.warm_meter.load_state_dict(ckpt["meters"]["warmup"])
    run.elapsed_before = float(ckpt["elapsed_s"])
    return list(ckpt["metrics"])


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
