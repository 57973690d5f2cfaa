"""The options every ``resnetlab reproduce`` command takes, checked once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from resnetlab.errors import UserError


@dataclass(frozen=True)
class Options:
    """What every ``reproduce`` command takes (see ``resnetlab reproduce --help``)."""

    out: Path
    dataset: str = "cifar10"
    data_dir: str | None = None
    seeds: int = 1
    budget_iterations: int | None = None
    budget_minutes: float | None = None  # for the whole reproduction, all runs together
    device: str = "auto"
    batch_size: int = 128  # the paper's CIFAR mini-batch
    evals: int = 4  # intermediate evaluations per run (the final one sees the whole test set)
    eval_limit: int | None = 1000  # images per intermediate evaluation
    precision: str = "auto"  # see engine.precision: bf16 autocast where the device computes it natively
    quiet: bool = False

    def check(self) -> None:
        """Raise :class:`UserError` for impossible values."""
        if self.seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {self.seeds}")
        if self.budget_iterations is not None and self.budget_minutes is not None:
            raise UserError("give either --budget-iterations or --budget-minutes, not both")
        if self.budget_iterations is not None and self.budget_iterations < 1:
            raise UserError(f"--budget-iterations must be a positive count, got {self.budget_iterations}")
        if self.budget_minutes is not None and not (
            self.budget_minutes > 0 and math.isfinite(self.budget_minutes)
        ):
            raise UserError(f"--budget-minutes must be a positive number, got {self.budget_minutes}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be a positive count, got {self.batch_size}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise UserError(f"--eval-limit must be a positive count, got {self.eval_limit}")
        if self.evals < 0:
            raise UserError(f"--evals must be 0 (none) or a positive count, got {self.evals}")
