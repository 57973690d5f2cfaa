"""`TrainConfig`: everything that defines a training run, in plain types for config.yaml."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from resnetlab.data.datasets import SPEC_HELP
from resnetlab.engine.compiling import choose_compile
from resnetlab.engine.precision import MEMORY_FORMATS, PRECISIONS, choose_mode
from resnetlab.errors import UserError
from resnetlab.models.zoo import build_model, model_info
from resnetlab.recipes import Recipe, get_recipe

DEVICES = ("auto", "cpu", "cuda", "mps")
NORMALIZATIONS = ("per-pixel", "per-channel")
STEP_MODES = ("auto", "eager", "graph")
# Fields that say where and how a run executes, not what it computes: a finished run is reused
# when everything else matches, and a resume may change them. data_dir says where the dataset is
# found, not what it is (the official files are checked against their MD5s wherever they are).
# The processes a run trains in are recorded (and kept on resume) but, as before they were, not
# compared when a finished run is reused; so is whether its step was compiled, which, like the
# step mode, changes rounding only.
RUNTIME_FIELDS = (
    "out",
    "resume",
    "overwrite",
    "quiet",
    "device",
    "mode_reason",
    "compile",
    "compile_reason",
    "step",
    "data_dir",
    "procs",
    "procs_reason",
)
# Defaults of the intervals a run leaves to choose (see resolve_intervals): intermediate evaluation
# and checkpoints stay a small share of the run's wall time whatever its length.
DEFAULT_EVALUATIONS = 20  # evaluations per run at most, the final one included
DEFAULT_EVAL_IMAGES = 1000  # images per intermediate evaluation: a fixed subset of the eval split
# An evaluated image costs about a third of a trained one (ResNet-20 on 2 CPU cores: 0.65 vs 2.2 ms),
# so intermediate evaluations that see at most 0.15 images per trained image stay near 5% of the run,
# and under 10% where evaluation costs up to two thirds of training.
EVAL_IMAGES_PER_TRAINED = 0.15
DEFAULT_CHECKPOINT_MINUTES = 5.0  # wall-clock minutes between checkpoints without --checkpoint-every


def _check_spec(spec: str) -> None:
    """Catch a malformed dataset spec before anything is written (load_dataset checks the rest)."""
    kind, colon, arg = spec.partition(":")
    needs_arg = {"folder": True, "imagenet": True, "cifar10": False, "cifar100": False}
    if kind == "synthetic" or (kind in needs_arg and needs_arg[kind] == bool(arg) and (arg or not colon)):
        return
    raise UserError(f"unknown dataset {spec!r}: expected {SPEC_HELP}")


@dataclass
class TrainConfig:
    """A training run. ``iterations=None`` means the recipe's own; ``log_every``, ``eval_every``,
    ``eval_limit`` and ``checkpoint_minutes`` of None are chosen when training starts (see
    :func:`resolve_intervals`) and then recorded. Counts are in iterations (SGD steps) unless named
    otherwise.
    """

    model: str | None  # a registered name; None only when resuming (taken from the checkpoint)
    dataset: str | None  # a dataset spec (see resnetlab.data.datasets); None only when resuming
    recipe: Recipe = field(default_factory=lambda: get_recipe("cifar-paper"))
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    out: Path = Path("runs/run")
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); a started run records what auto chose
    memory_format: str = "auto"  # auto | channels_last | contiguous; recorded the same way
    mode_reason: str | None = None  # why the run computes in that mode (see engine.precision)
    procs: int | None = None  # processes of the job, recorded when it starts (None: a run from before)
    procs_reason: str | None = None  # why that many (``--procs auto``), None when given or by default
    compile: bool | None = None  # None: auto (see engine.compiling); a started run records the choice
    compile_reason: str | None = None  # why it compiles or not
    step: str = "auto"  # auto | eager | graph (see engine.fleet.choose_step)
    deterministic: bool = False
    iterations: int | None = None
    budget_minutes: float | None = None
    val_split: int = 0  # images held out of train as the validation split (5000 = the paper's 45k/5k)
    normalization: str = "per-pixel"
    log_every: int | None = None
    eval_every: int | None = None
    eval_limit: int | None = None  # images per intermediate evaluation; the final one sees the whole split
    checkpoint_every: int | None = None  # None: no checkpoints by iteration count
    checkpoint_minutes: float | None = None  # wall-clock interval; a checkpoint is always written at the end
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
            (
                self.precision in PRECISIONS,
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (
                self.memory_format in MEMORY_FORMATS,
                f"--memory-format must be one of {', '.join(MEMORY_FORMATS)}, got {self.memory_format!r}",
            ),
            (self.step in STEP_MODES, f"--step must be one of {', '.join(STEP_MODES)}, got {self.step!r}"),
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
            (
                self.checkpoint_minutes is None
                or (self.checkpoint_minutes > 0 and math.isfinite(self.checkpoint_minutes)),
                "--checkpoint-minutes must be a positive number of minutes",
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

    @property
    def amp(self) -> str | None:
        """The training step's autocast dtype name: "bf16" or None (the precision must be resolved)."""
        if self.precision == "auto":
            raise ValueError("the run's precision is not chosen yet (see engine.precision.choose_mode)")
        return "bf16" if self.precision == "bf16" else None

    @property
    def channels_last(self) -> bool:
        """Whether the net and its batches are channels_last (the memory format must be resolved)."""
        if self.memory_format == "auto":
            raise ValueError("the run's memory format is not chosen yet (see engine.precision.choose_mode)")
        return self.memory_format == "channels_last"

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
        unknown = sorted(set(_upgrade(dict(d))) - names)
        if unknown:
            raise UserError(f"unknown training config keys: {', '.join(unknown)}")
        values = _upgrade(dict(d))
        values["recipe"] = Recipe.from_dict(d["recipe"]) if "recipe" in d else get_recipe("cifar-paper")
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """What the run computes: :meth:`to_dict` without the runtime fields (for reuse checks)."""
        d = self.to_dict()
        for name in RUNTIME_FIELDS:
            d.pop(name)
        return d


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A config written before ``precision``/``memory_format`` (``amp``, ``channels_last``) in today's
    terms, so that older checkpoints resume in the mode they were trained in."""
    if "amp" in d:
        d["precision"] = "bf16" if d.pop("amp") == "bf16" else "fp32"
    if "channels_last" in d:
        d["memory_format"] = "channels_last" if d.pop("channels_last") else "contiguous"
    return d


def resolve_intervals(
    config: TrainConfig, total: int, *, batches_per_epoch: int, eval_images: int
) -> TrainConfig:
    """Fill in the iteration count and the intervals left to choose, for a run of ``total``
    iterations of ``batches_per_epoch`` per epoch evaluated on a split of ``eval_images``.

    About 50 log rows. Intermediate evaluations on the first ``DEFAULT_EVAL_IMAGES`` of the split's
    fixed shuffled order, at most once an epoch, ``DEFAULT_EVALUATIONS`` times a run and
    ``EVAL_IMAGES_PER_TRAINED`` of the images trained: none in a run shorter than an epoch.
    Checkpoints every ``DEFAULT_CHECKPOINT_MINUTES`` unless ``checkpoint_every`` is given.
    Explicit values are kept as they are.
    """
    log_every = config.log_every or max(1, min(100, total // 50))
    eval_limit = config.eval_limit or min(DEFAULT_EVAL_IMAGES, eval_images)
    seen = min(eval_limit, eval_images)
    eval_every = config.eval_every or max(
        batches_per_epoch,
        math.ceil(total / DEFAULT_EVALUATIONS),
        math.ceil(seen / (EVAL_IMAGES_PER_TRAINED * config.recipe.batch_size)),
    )
    checkpoint_minutes = config.checkpoint_minutes
    if checkpoint_minutes is None and config.checkpoint_every is None:
        checkpoint_minutes = DEFAULT_CHECKPOINT_MINUTES
    return replace(
        config,
        iterations=total,
        log_every=log_every,
        eval_every=eval_every,
        eval_limit=eval_limit,
        checkpoint_minutes=checkpoint_minutes,
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
    runtime = {name: getattr(config, name) for name in ("out", "resume", "device", "quiet", "step")}
    return replace(stored, **runtime)


def resolve_compile(
    config: TrainConfig, device: torch.device, world_size: int, resumed: bool = False
) -> TrainConfig:
    """``config`` with ``compile`` chosen (auto: see :func:`choose_compile`) and the reason recorded;
    a resumed run keeps the choice recorded when it started (runs from before auto: what they had)."""
    if resumed and config.compile is not None:
        return replace(config, compile_reason=config.compile_reason or "as the run started")
    choice = choose_compile(
        config.compile,
        device,
        config.total_iterations(),
        world_size=world_size,
        recompute=config.checkpoint_activations,
    )
    return replace(config, compile=choice.compile, compile_reason=choice.reason)


def resolve_mode(config: TrainConfig, device: torch.device) -> TrainConfig:
    """``config`` with its precision and memory format chosen for ``device`` and the reason recorded.

    Explicit choices are kept; a resumed run's were recorded when it started, so it keeps them and
    the reason it had then. The net is built on the meta device (nothing allocated) so that ``auto``
    can look at its layers (see :func:`choose_mode`).
    """
    net = None
    if config.memory_format == "auto" and config.model:
        with torch.device("meta"):
            net = build_model(config.model, **config.model_overrides)
    mode = choose_mode(device, config.precision, config.memory_format, net)
    asked = config.precision != "auto" and config.memory_format != "auto"
    reason = config.mode_reason if asked and config.mode_reason else mode.reason
    return replace(config, precision=mode.precision, memory_format=mode.memory_format, mode_reason=reason)
