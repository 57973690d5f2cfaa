"""`resnetlab train`: train a registered network with a paper recipe, on one process or under torchrun.

Exit codes: 0 done, 2 a user mistake (one line on stderr), 3 training diverged (non-finite loss or
weights; the message names the iteration and the last good checkpoint stays).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from resnetlab.engine.checkpoint import load_checkpoint, resolve_checkpoint
from resnetlab.engine.compiling import COMPILE_MIN_ITERATIONS
from resnetlab.engine.config import (
    DEFAULT_CHECKPOINT_MINUTES,
    DEFAULT_EVAL_IMAGES,
    DEVICES,
    NORMALIZATIONS,
    STEP_MODES,
    TrainConfig,
)
from resnetlab.engine.precision import add_mode_arguments
from resnetlab.errors import UserError
from resnetlab.recipes import RECIPES, SCHEDULES, Recipe, load_overrides, recipe_for

EXIT_DIVERGED = 3
# Recipe fields with a command-line flag of the same name (underscores as dashes).
RECIPE_FLAGS = (
    "lr",
    "batch_size",
    "weight_decay",
    "momentum",
    "schedule",
    "nesterov",
    "label_smoothing",
    "zero_init_residual",
    "test_flip",
)
# Everything that defines what a run computes: fixed by the checkpoint when resuming.
RUN_FLAGS = (
    *RECIPE_FLAGS,
    "recipe",
    "config",
    "iterations",
    "budget_minutes",
    "seed",
    "val_split",
    "normalization",
    "data_dir",
    "deterministic",
    "precision",
    "memory_format",
    "amp",
    "channels_last",
    "compile",
    "checkpoint_activations",
    "sync_bn",
    "log_every",
    "eval_every",
    "eval_limit",
    "checkpoint_every",
    "checkpoint_minutes",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network with a paper recipe (also under torchrun)")
    p.add_argument("--model", help="a registered network, e.g. resnet20 (see `resnetlab models`)")
    p.add_argument("--dataset", help="cifar10, cifar100, folder:PATH, imagenet:PATH or synthetic[:...]")
    p.add_argument("--recipe", help=f"base recipe: {', '.join(RECIPES)} (default by dataset)")
    p.add_argument("--config", metavar="FILE", help="YAML file of recipe field overrides")
    p.add_argument("--out", type=Path, help="run directory (default runs/MODEL-DATASET-sSEED)")
    p.add_argument("--data-dir", help="where datasets are downloaded and decoded caches kept")
    p.add_argument("--val-split", type=int, help="training images held out for validation (default 0)")
    p.add_argument("--seed", type=int, help="seed of initialisation, shuffling and augmentation (default 0)")
    p.add_argument("--deterministic", action="store_true", default=None, help="bitwise-reproducible run")
    p.add_argument("--device", choices=DEVICES, default="auto")
    add_mode_arguments(p)
    p.add_argument("--amp", choices=["bf16"], help="the same as --precision bf16 (kept for old scripts)")
    p.add_argument(
        "--channels-last", action="store_true", default=None, help="the same as --memory-format channels_last"
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training step, or not (--no-compile); default auto: compiled on a CPU "
        f"for runs of {COMPILE_MIN_ITERATIONS:,} iterations and more where a C++ compiler is found",
    )
    p.add_argument(
        "--step",
        choices=STEP_MODES,
        default="auto",
        help="auto (default): the whole training step as one captured CUDA graph on CUDA (data in "
        "memory, one process), eager elsewhere; eager or graph to choose (graph off CUDA runs uncaptured)",
    )
    p.add_argument("--normalization", choices=NORMALIZATIONS, help="input normalisation (default per-pixel)")
    budget = p.add_argument_group("length (compresses the recipe's schedule to fit)")
    budget.add_argument("--iterations", type=int, help="total iterations")
    budget.add_argument("--budget-minutes", type=float, help="wall-clock minutes for the whole run")
    recipe = p.add_argument_group("recipe overrides (modern options are never paper defaults)")
    recipe.add_argument("--lr", type=float, help="initial learning rate")
    recipe.add_argument("--batch-size", type=int, help="images per global batch (all processes)")
    recipe.add_argument("--weight-decay", type=float)
    recipe.add_argument("--momentum", type=float)
    recipe.add_argument("--schedule", choices=SCHEDULES)
    recipe.add_argument("--nesterov", action="store_true", default=None)
    recipe.add_argument("--label-smoothing", type=float)
    recipe.add_argument("--zero-init-residual", action="store_true", default=None)
    recipe.add_argument(
        "--test-flip", action="store_true", default=None, help="evaluate each image and its mirror, averaged"
    )
    every = p.add_argument_group("intervals (chosen from the run length and the data when omitted)")
    every.add_argument("--log-every", type=int, help="iterations between training log rows")
    every.add_argument(
        "--eval-every",
        type=int,
        help="iterations between intermediate evaluations (default: at most once an epoch and 20 times "
        "a run, so none in a run shorter than an epoch)",
    )
    every.add_argument(
        "--eval-limit",
        type=int,
        help=f"images per intermediate evaluation, a fixed shuffled subset of the split (default "
        f"{DEFAULT_EVAL_IMAGES}); the final evaluation sees the whole split",
    )
    every.add_argument(
        "--checkpoint-every",
        type=int,
        help="iterations between checkpoints, instead of the wall-clock interval (a checkpoint is "
        "always written at the end)",
    )
    every.add_argument(
        "--checkpoint-minutes",
        type=float,
        help=f"wall-clock minutes between checkpoints (default {DEFAULT_CHECKPOINT_MINUTES:g} "
        "without --checkpoint-every)",
    )
    p.add_argument(
        "--checkpoint-activations", action="store_true", default=None, help="recompute in backward"
    )
    p.add_argument("--sync-bn", action="store_true", default=None, help="BN statistics over all processes")
    p.add_argument(
        "--procs",
        type=_procs_arg,
        default=1,
        help="local processes of one DDP job (gloo on CPUs), the threads shared among them (default 1); "
        "auto: 2 on a CPU-only machine with 2 or more threads, else 1 (a resumed run: as it started)",
    )
    p.add_argument("--resume", metavar="PATH", help="continue a run from its checkpoint or run directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run_train)


def default_out(model: str, dataset: str, seed: int) -> Path:
    """runs/MODEL-DATASET-sSEED, with DATASET the spec's kind or the folder's name."""
    kind, _, arg = dataset.partition(":")
    label = Path(arg.rstrip("/")).name if kind in ("folder", "imagenet") and arg else kind
    return Path("runs") / f"{model}-{label or kind}-s{seed}"


def build_recipe(args: argparse.Namespace) -> Recipe:
    """Base recipe (--recipe, the YAML's ``base``, or by dataset), the paper's per-model rule, the
    YAML overrides, then the command-line flags."""
    overrides: dict[str, Any] = load_overrides(args.config) if args.config else {}
    base = args.recipe or overrides.pop("base", None)
    overrides.pop("base", None)
    if base is None:
        base = "imagenet-paper" if args.dataset.startswith("imagenet:") else "cifar-paper"
    flags = {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None}
    return recipe_for(base, args.model, **{**overrides, **flags})


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig an invocation asks for (with --resume: only where and how to continue)."""
    if args.resume:
        given = [f"--{n.replace('_', '-')}" for n in RUN_FLAGS if getattr(args, n) is not None]
        if given:
            raise UserError(
                f"{', '.join(given)} cannot be changed when resuming: the run continues with the "
                "settings of its checkpoint"
            )
        if args.overwrite:
            raise UserError("--resume and --overwrite contradict each other")
        checkpoint = resolve_checkpoint(args.resume)
        return TrainConfig(
            model=args.model,
            dataset=args.dataset,
            out=args.out or checkpoint.parent,
            device=args.device,
            step=args.step,
            resume=checkpoint,
            quiet=args.quiet,
        )
    missing = [flag for flag, value in (("--model", args.model), ("--dataset", args.dataset)) if not value]
    if missing:
        raise UserError(f"{' and '.join(missing)} required (or --resume RUN_DIR to continue a run)")
    seed = 0 if args.seed is None else args.seed
    return TrainConfig(
        model=args.model,
        dataset=args.dataset,
        recipe=build_recipe(args),
        data_dir=args.data_dir,
        out=args.out or default_out(args.model, args.dataset, seed),
        seed=seed,
        device=args.device,
        step=args.step,
        precision=_merged(args.precision, "bf16" if args.amp else None, "--precision", "--amp bf16"),
        memory_format=_merged(
            args.memory_format,
            "channels_last" if args.channels_last else None,
            "--memory-format",
            "--channels-last",
        ),
        compile=args.compile,
        deterministic=bool(args.deterministic),
        iterations=args.iterations,
        budget_minutes=args.budget_minutes,
        val_split=args.val_split or 0,
        normalization=args.normalization or "per-pixel",
        log_every=args.log_every,
        eval_every=args.eval_every,
        eval_limit=args.eval_limit,
        checkpoint_every=args.checkpoint_every,
        checkpoint_minutes=args.checkpoint_minutes,
        checkpoint_activations=bool(args.checkpoint_activations),
        sync_bn=bool(args.sync_bn),
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def _merged(value: str | None, alias: str | None, flag: str, alias_flag: str) -> str:
    """The mode a flag and its older alias ask for together ("auto" when neither is given)."""
    if value is not None and alias is not None and value != alias:
        raise UserError(f"{flag} {value} contradicts {alias_flag}: give one of them")
    return value or alias or "auto"


def _without_procs(argv: list[str]) -> list[str]:
    """``argv`` without ``--procs N`` / ``--procs=N`` (what each rank runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--procs":
            skip = True
        elif not arg.startswith("--procs="):
            out.append(arg)
    return out


def _procs_arg(text: str) -> int | str:
    """``--procs``: a count or ``auto`` (a count is checked for being positive when the run starts)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or auto, got {text!r}") from None


def _auto_procs(args: argparse.Namespace) -> tuple[int, str]:
    """What ``--procs auto`` means for this invocation: a resumed run's recorded count, else
    :func:`resnetlab.engine.launch.choose_procs`."""
    from resnetlab.engine.launch import choose_procs

    if not args.resume:
        return choose_procs(args.device)
    checkpoint = resolve_checkpoint(args.resume)
    recorded = load_checkpoint(checkpoint).get("config", {}).get("procs")
    if recorded is None:
        raise UserError(
            f"--procs auto: {checkpoint} does not record how many processes trained it (a run from before "
            "--procs auto); give --procs N"
        )
    return recorded, f"auto: {recorded} as the run started"


def run_train(args: argparse.Namespace) -> int:
    from resnetlab.engine.launch import PROCS_REASON_ENV, threads_per_process
    from resnetlab.engine.trainer import DivergedError, train

    if (args.procs == "auto" or args.procs > 1) and "RANK" in os.environ:
        raise UserError("--procs starts its own processes: leave it out under torchrun")
    reason = os.environ.get(PROCS_REASON_ENV)  # set by the launcher for its ranks
    if args.procs == "auto":
        args.procs, reason = _auto_procs(args)
        if not args.quiet:
            threads = threads_per_process(args.procs)
            print(f"processes: {args.procs} x {threads} thread(s) ({reason})", flush=True)
    if args.procs < 1:
        raise UserError(f"--procs must be a positive count, got {args.procs}")
    config = build_config(args)
    if reason is not None and not args.resume:
        config.procs_reason = reason
    if args.procs > 1:
        from resnetlab.engine.launch import launch_local

        config.validate()  # one error line here rather than one from every rank
        return launch_local(args.procs, _without_procs(args.argv), reason)
    try:
        result = train(config)
    except DivergedError as exc:
        print(f"resnetlab: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    if not config.quiet and os.environ.get("RANK", "0") == "0":
        print(f"run directory: {result.out}")
    return 0
