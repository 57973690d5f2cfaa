"""The training engine: config, one SGD step, schedules, checkpoints, torchrun, the training loop."""

from resnetlab.engine.config import TrainConfig
from resnetlab.engine.step import TrainStep
from resnetlab.engine.trainer import DivergedError, TrainResult, build_data, evaluate, train

__all__ = ["DivergedError", "TrainConfig", "TrainResult", "TrainStep", "build_data", "evaluate", "train"]
