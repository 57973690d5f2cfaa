"""The training engine: config, one SGD step, schedules, checkpoints, torchrun, the training loop
for one net or a fleet of nets side by side."""

from resnetlab.engine.config import TrainConfig
from resnetlab.engine.step import TrainStep
from resnetlab.engine.trainer import (
    DivergedError,
    TrainResult,
    build_data,
    evaluate,
    probe_fleet,
    train,
    train_fleet,
)

__all__ = [
    "DivergedError",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "build_data",
    "evaluate",
    "probe_fleet",
    "train",
    "train_fleet",
]
