"""One run's time budget: measure how fast this machine trains, then fix the iteration count once.

(A reproduction's budget, one count shared by all its runs, is :mod:`resnetlab.experiments.shared_budget`.)

A run with ``--budget-minutes M`` first times a few steps (after a warm-up that absorbs allocation
and compilation), one small evaluation and the serialisation of a checkpoint, then restores the
model and optimizer exactly, and trains a complete schedule of the number of iterations that fits,
evaluations and checkpoints included: the same run as ``--iterations N`` with that N, which is
logged and recorded in config.yaml.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from resnetlab.engine.checkpoint import rng_state, set_rng_state
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.distributed import DistContext, wide_float
from resnetlab.engine.fleet import Fleet
from resnetlab.errors import UserError

WARMUP_STEPS = 2  # not timed: first-call allocation, cuDNN autotuning, torch.compile
MIN_STEPS, MAX_STEPS = 3, 30  # timed steps
MEASURE_FRACTION = 0.02  # stop timing after this fraction of the budget (once MIN_STEPS are done)
SAFETY_MARGIN = 0.05  # of the budget, kept for speed fluctuations
MIN_ITERATIONS = 10


@dataclass(frozen=True)
class Speed:
    """Measured costs in seconds: one training step (of every net of a fleet), one evaluated image
    (all ranks together) and one checkpoint's serialisation."""

    step_s: float
    eval_image_s: float
    checkpoint_s: float


def run_seconds(config: TrainConfig, speed: Speed, eval_images: int, final_eval_images: int) -> float:
    """Predicted seconds of the run ``config`` resolves to (see ``config.resolve_intervals``) after
    its setup: its steps, intermediate evaluations of ``eval_limit`` of the ``eval_images`` of the
    split, final evaluation of ``final_eval_images`` and checkpoints."""
    n = config.iterations
    evaluated = (n - 1) // config.eval_every * min(config.eval_limit, eval_images) + final_eval_images
    seconds = n * speed.step_s + evaluated * speed.eval_image_s
    checkpoints = 1 + (n // config.checkpoint_every if config.checkpoint_every else 0)
    if config.checkpoint_minutes:
        checkpoints += int(seconds // (60 * config.checkpoint_minutes))
    return seconds + checkpoints * speed.checkpoint_s


def plan_iterations(
    budget_s: float,
    spent_s: float,
    speed: Speed,
    resolve: Callable[[int], TrainConfig],
    *,
    eval_images: int,
    final_eval_images: int,
) -> int:
    """The number of iterations that fits in what is left of ``budget_s``.

    ``resolve(n)`` is the config of an ``n``-iteration run with its intervals chosen as the run
    will choose them, so the plan counts the evaluations and checkpoints the run will make.
    """
    left = budget_s * (1 - SAFETY_MARGIN) - spent_s

    def fits(n: int) -> bool:
        return run_seconds(resolve(n), speed, eval_images, final_eval_images) <= left

    # Costs grow with n (but for the odd evaluation fewer in a longer run): bisect for the last fit.
    low, high = 0, max(0, math.floor(left / speed.step_s)) + 1  # fits(high) is false
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    if low < MIN_ITERATIONS:
        raise UserError(
            f"--budget-minutes {budget_s / 60:g} is too short: at {speed.step_s:.3g} s per iteration "
            f"(plus evaluations) it leaves {low} iterations; allow more minutes or give --iterations"
        )
    return low


def fit_iterations(left_s: float, per_iteration_s: float, too_short: Callable[[int], str]) -> int:
    """Whole iterations of ``per_iteration_s`` seconds that fit in ``left_s``.

    Fewer than MIN_ITERATIONS is a user error, worded by ``too_short(iterations)``.
    """
    iterations = math.floor(left_s / per_iteration_s) if left_s > 0 else 0
    if iterations < MIN_ITERATIONS:
        raise UserError(too_short(iterations))
    return iterations


def _endless(fleet: Fleet) -> Iterator[tuple[Any, ...]]:
    for epoch in itertools.count():
        yield from fleet.epoch(epoch)


def measure_speed(
    fleet: Fleet,
    evaluate_some: Callable[[], int],
    budget_s: float,
    ctx: DistContext,
) -> Speed:
    """Time training steps (of every net of ``fleet`` together), a small evaluation and a
    checkpoint's serialisation (to memory: the weights and optimizer state are its bulk), leaving
    models, optimizers and RNG as they were.

    ``evaluate_some`` evaluates a few batches and returns how many images it saw. The slowest rank's
    speed counts, so every rank plans the same number of iterations.
    """
    saved = [
        (copy.deepcopy(s.model.state_dict()), copy.deepcopy(s.optimizer.state_dict())) for s in fleet.steps
    ]
    rng = rng_state()
    batches = _endless(fleet)

    def step() -> None:
        for loss, _ in fleet.step_all(next(batches)):
            loss.item()  # wait for the device, so the clock measures the work

    for _ in range(WARMUP_STEPS):
        step()
    start = time.perf_counter()
    steps = 0
    while steps < MIN_STEPS or (
        steps < MAX_STEPS and time.perf_counter() - start < MEASURE_FRACTION * budget_s
    ):
        step()
        steps += 1
    step_s = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    images = evaluate_some()
    eval_image_s = (time.perf_counter() - start) / max(images, 1)
    start = time.perf_counter()
    torch.save([{"model": m, "optimizer": o} for m, o in saved], io.BytesIO())
    checkpoint_s = time.perf_counter() - start
    for s, (model_state, optimizer_state) in zip(fleet.steps, saved, strict=True):
        s.model.load_state_dict(model_state)
        s.optimizer.load_state_dict(optimizer_state)
    set_rng_state(rng)
    costs = torch.tensor(
        [step_s, eval_image_s, checkpoint_s], dtype=wide_float(ctx.device), device=ctx.device
    )
    ctx.all_reduce(costs, op="max")
    return Speed(*costs.tolist())
