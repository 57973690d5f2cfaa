"""What a checkpoint holds and how a run or a bare model comes back from one."""

from __future__ import annotations

from typing import Any

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
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    run.iteration, run.epoch, run.step_in_epoch = ckpt["iteration"], ckpt["epoch"], ckpt["step_in_epoch"]
    run.meter.load_state_dict(ckpt["meters"]["log"])
    run.warm_meter.load_state_dict(ckpt["meters"]["warmup"])
    run.elapsed_before = float(ckpt["elapsed_s"])
    return list(ckpt["metrics"])


def model_from_checkpoint(ckpt: dict[str, Any]) -> ResNet:
    """The trained network of a loaded checkpoint, in eval mode on the CPU."""
    try:
        model = ResNet(**ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"the checkpoint's weights do not fit its model config: {str(exc).splitlines()[0]}"
        ) from None
    return model.eval()
