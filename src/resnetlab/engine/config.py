"""`TrainConfig`: everything that defines a training run, in plain types for config.yaml."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resnetlab.data.datasets import SPEC_HELP
from resnetlab.errors import UserError
from resnetlab.models.zoo import model_info
from resnetlab.recipes import Recipe, get_recipe

DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = (None, "bf16")
NORMALIZATIONS = ("per-pixel", "per-channel")
# Fields that say where and how a run executes, not what it computes: a finished run is reused
# when everything else matches.
RUNTIME_FIELDS = ("out", "resume", "overwrite", "quiet", "device")
DEFAULT_EVALUATIONS = 20  # evaluations per run when --eval-every is not given


def _check_spec(spec: str) -> None:
    """Catch a malformed dataset spec before anything is written (load_dataset checks the rest)."""
    kind, colon, arg = spec.partition(":")
    needs_arg = {"folder": True, "imagenet": True, "cifar10": False, "cifar100": False}
    if kind == "synthetic" or (kind in needs_arg and needs_arg[kind] == bool(arg) and (arg or not colon)):
        return
    raise UserError(f"unknown dataset {spec!r}: expected {SPEC_HELP}")


@dataclass
class TrainConfig:
    """A training run. ``iterations=None`` means the recipe's own; ``log_every``, ``eval_every`` and
    ``checkpoint_every`` of None are chosen from the iteration count when training starts (and then
    recorded). Counts are in iterations (SGD steps) unless named otherwise.
    """

    model: str | None  # a registered name; None only when resuming (taken from the checkpoint)
    dataset: str | None  # a dataset spec (see resnetlab.data.datasets); None only when resuming
    recipe: Recipe = field(default_factory=lambda: get_recipe("cifar-paper"))
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    out: Path = Path("runs/run")
    seed: int = 0
    device: str = "auto"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = False
    iterations: int | None = None
    budget_minutes: float | None = None
    val_split: int = 0  # images held out of train as the validation split (5000 = the paper's 45k/5k)
    normalization: str = "per-pixel"
    log_every: int | None = None
    eval_every: int | None = None
    eval_limit: int | None = None  # images per intermediate evaluation; the final one sees the whole split
    checkpoint_every: int | None = None
    checkpoint_activations: bool = False
    sync_bn: bool = False
    resume: Path | None = None
    overwrite: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.resume = None if self.resume is None else Path(self.resume)

    def validate(self) -> None:
        """Raise :class:`UserError` for impossible values or combinations (before any work is done)."""
        checks = [
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.amp in AMP_MODES, f"--amp must be bf16 or absent, got {self.amp!r}"),
            (self.normalization in NORMALIZATIONS, f"unknown --normalization {self.normalization!r}"),
            (self.iterations is None or self.iterations >= 1, "--iterations must be a positive count"),
            (
                self.budget_minutes is None
                or (self.budget_minutes > 0 and math.isfinite(self.budget_minutes)),
                "--budget-minutes must be a positive number of minutes",
            ),
            (
                self.iterations is None or self.budget_minutes is None,
                "give either --iterations or --budget-minutes, not both",
            ),
            (self.val_split >= 0, "--val-split must be 0 (none) or a positive number of images"),
            (self.seed >= 0, "--seed must be a non-negative integer"),
            (self.resume is None or not self.overwrite, "--resume and --overwrite contradict each other"),
        ]
        for name in ("log_every", "eval_every", "checkpoint_every", "eval_limit"):
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            checks.append((value is None or value >= 1, f"{flag} must be a positive count, got {value}"))
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.resume is None and not (self.model and self.dataset):
            raise UserError("a model and a dataset are required (or resume a run from its checkpoint)")
        if self.model:
            model_info(self.model)
        if self.dataset:
            _check_spec(self.dataset)

    def total_iterations(self) -> int | None:
        """The iteration count of the run: explicit, the recipe's, or None while a budget is unresolved."""
        if self.iterations is not None:
            return self.iterations
        return None if self.budget_minutes is not None else self.recipe.iterations

    def schedule_recipe(self) -> Recipe:
        """The recipe compressed to this run's iteration count (must be resolved)."""
        total = self.total_iterations()
        if total is None:
            raise ValueError("the iteration count of a budgeted run is not known yet")
        return self.recipe.scaled(total)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (paths as strings, the recipe as a mapping)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipe"] = self.recipe.to_dict()
        d["out"] = str(self.out)
        d["resume"] = None if self.resume is None else str(self.resume)
        d["model_overrides"] = dict(self.model_overrides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown training config keys: {', '.join(unknown)}")
        values = dict(d)
        values["recipe"] = Recipe.from_dict(d["recipe"]) if "recipe" in d else get_recipe("cifar-paper")
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """What the run computes: :meth:`to_dict` without the runtime fields (for reuse checks)."""
        d = self.to_dict()
        for name in RUNTIME_FIELDS:
            d.pop(name)
        return d


def resolve_intervals(config: TrainConfig, total: int) -> TrainConfig:
    """Fill in the iteration count and the intervals left to choose (about 50 log rows and
    ``DEFAULT_EVALUATIONS`` evaluations per run, a checkpoint at every evaluation)."""
    log_every = config.log_every or max(1, min(100, total // 50))
    eval_every = config.eval_every or max(1, total // DEFAULT_EVALUATIONS)
    checkpoint_every = config.checkpoint_every or eval_every
    return replace(
        config,
        iterations=total,
        log_every=log_every,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
    )


def resumed_config(config: TrainConfig, ckpt: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config with this invocation's runtime fields (where, which device, verbosity)."""
    missing = [k for k in ("config", "optimizer", "scheduler", "meters", "rng") if k not in ckpt]
    if missing:
        raise UserError(f"--resume {config.resume}: not a training checkpoint (missing {', '.join(missing)})")
    stored = TrainConfig.from_dict(ckpt["config"])
    for name in ("model", "dataset"):
        given = getattr(config, name)
        if given and given != getattr(stored, name):
            raise UserError(
                f"--resume {config.resume}: the checkpoint was trained with --{name} "
                f"{getattr(stored, name)}, not {given} (leave --{name} out when resuming)"
            )
    return replace(stored, out=config.out, resume=config.resume, device=config.device, quiet=config.quiet)
