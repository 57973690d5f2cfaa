"""The tiny runs the tests train: the nets, the synthetic datasets and one config factory, so that a
test names only what it relies on (its length, its intervals, its data) and takes the rest from here.
Also: a run stopped as Ctrl-C would stop it, right after an iteration the test chooses."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resnetlab.engine import TrainConfig, train
from resnetlab.engine import trainer as trainer_mod
from resnetlab.recipes import get_recipe

TINY_NET = {"layers": [1, 1, 1], "widths": [4, 8, 8]}  # an 8-layer CIFAR-style net: fast on one core
LEARNABLE_NET = {"layers": [1, 1, 1], "widths": [8, 16, 16]}  # learns LEARNABLE_DATA in a few dozen steps


def synthetic_spec(train: int = 256, test: int = 64, size: int = 8, classes: int = 10) -> str:
    """The dataset spec ``synthetic:TRAIN,TEST,SIZE,CLASSES`` (see resnetlab.data.synthetic)."""
    return f"synthetic:{train},{test},{size},{classes}"


DATA = synthetic_spec()  # 256 training images of 8x8 (8 batches of 32 an epoch), 64 test images, 10 classes
SMALL_DATA = synthetic_spec(64, 32)  # 64 training images, 32 test images of 8x8
LEARNABLE_DATA = synthetic_spec(size=16)  # 16x16 images: big enough for a net to learn the classes


def tiny_config(out: Path, **overrides: Any) -> TrainConfig:
    """A short, quiet, deterministic run of TINY_NET on DATA in batches of 32: 12 iterations, and the
    intervals (log, evaluation, checkpoints) left to the trainer's defaults, chosen when training
    starts. ``overrides`` replace any of these or set any other TrainConfig field."""
    base = {
        "model": "resnet20",
        "model_overrides": copy.deepcopy(TINY_NET),  # a run never shares (or alters) the constant
        "dataset": DATA,
        "recipe": get_recipe("cifar-paper", batch_size=32),
        "out": out,
        "iterations": 12,
        "quiet": True,
        "deterministic": True,
    }
    return TrainConfig(**(base | overrides))


def after_each_step(monkeypatch: pytest.MonkeyPatch, hook: Callable[[Any], None]) -> None:
    """Call ``hook(trainer)`` after every training step, once the trainer's own work for it is done."""
    original = trainer_mod._Trainer._after_step

    def after_step(self) -> None:
        original(self)
        hook(self)

    monkeypatch.setattr(trainer_mod._Trainer, "_after_step", after_step)


def interrupt_after(config: TrainConfig, iteration: int) -> None:
    """Train ``config`` as if Ctrl-C came right after ``iteration``: train() raises KeyboardInterrupt.
    Later runs train normally again."""

    def ctrl_c(trainer) -> None:
        if trainer.iteration == iteration:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        after_each_step(patch, ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            train(config)
