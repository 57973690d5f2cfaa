"""Learning-rate schedules: the paper's step and plateau rules, cosine and linear decay, and the
ResNet-110 warm-up condition, with their state in plain types for checkpoints.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from resnetlab.recipes import Recipe

# The warm-up rule watches the training error over windows of this many iterations (1,280 images at
# batch 128): long enough for a steady estimate, short against the paper's "about 400 iterations".
WARMUP_WINDOW = 10


class LRSchedule:
    """The learning rate of every iteration of a :class:`Recipe`.

    ``lr(t)`` is the rate of the step with 0-based index ``t`` (so "divide by 10 at 32k iterations"
    means steps 32000 onwards use the smaller rate). Two rules depend on what training observes and
    keep state: the warm-up (``warmup_lr`` until the running training error is below
    ``warmup_error``, then the normal schedule; it never comes back) and the plateau rule (lr times
    ``gamma`` after ``plateau_patience`` evaluations without a new best error).
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.warming = recipe.warmup_lr is not None
        self.warmup_ended_at: int | None = None
        self.reductions = 0
        self.best_error: float | None = None
        self.bad_evals = 0

    def base_lr(self, t: int) -> float:
        """The schedule without the warm-up rule."""
        r = self.recipe
        if r.schedule == "step":
            return r.lr * r.gamma ** bisect.bisect_right(r.milestones, t)
        if r.schedule == "cosine":
            return r.lr * 0.5 * (1.0 + math.cos(math.pi * t / r.iterations))
        if r.schedule == "linear":
            return r.lr * (1.0 - t / r.iterations)
        return r.lr * r.gamma**self.reductions

    def lr(self, t: int) -> float:
        """The rate of step ``t``; during the warm-up never above the schedule's own rate."""
        base = self.base_lr(t)
        if self.warming:
            return min(self.recipe.warmup_lr, base)
        return base

    def wants_train_error(self, iteration: int) -> bool:
        """Whether the trainer should report the running training error after ``iteration`` steps."""
        return self.warming and iteration % WARMUP_WINDOW == 0

    def observe_train_error(self, error: float, iteration: int) -> bool:
        """Feed the training error of the last window; True when this ends the warm-up."""
        if self.warming and error < self.recipe.warmup_error:
            self.warming = False
            self.warmup_ended_at = iteration
            return True
        return False

    def observe_eval(self, error: float) -> bool:
        """Feed a validation error; True when the plateau rule lowers the rate."""
        if self.recipe.schedule != "plateau":
            return False
        if self.best_error is None or error < self.best_error:
            self.best_error, self.bad_evals = error, 0
            return False
        self.bad_evals += 1
        if self.bad_evals < self.recipe.plateau_patience:
            return False
        self.reductions += 1
        self.bad_evals = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        """Plain types: everything observed so far."""
        return {
            "warming": self.warming,
            "warmup_ended_at": self.warmup_ended_at,
            "reductions": self.reductions,
            "best_error": self.best_error,
            "bad_evals": self.bad_evals,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.warming = bool(state["warming"])
        self.warmup_ended_at = state["warmup_ended_at"]
        self.reductions = int(state["reductions"])
        self.best_error = state["best_error"]
        self.bad_evals = int(state["bad_evals"])
