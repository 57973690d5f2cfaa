"""Time to accuracy: wall time and epochs for ResNet-20 on CIFAR-10 to reach 80/85/88/90/91.25% test top-1.

91.25% is the paper's ResNet-20 (8.75% error, Table 6). Each run is a complete training run of
``resnetlab.engine.trainer.train`` with a wall-clock budget (``--max-minutes``; the engine times the
machine first, then compresses the recipe's schedule into the number of iterations that fits, so the
learning rate anneals *within* the budget) or a length in epochs (``--epochs``). The full test
set (10,000 images) is evaluated every ``--eval-every`` iterations; the first evaluation at or above
each threshold gives the time, with and without the time spent evaluating.

Recipes are the library's own (``resnetlab.recipes``), on all 50,000 training images of the official
CIFAR-10, tested on its 10,000 test images, in the precision ``resnetlab train`` picks (``--precision``;
on CUDA also torch.compile):
- ``cifar-paper``: the paper's recipe (lr 0.1 divided by 10 at 50% and 75% of the iterations, weight
  decay 1e-4, momentum 0.9, per-pixel mean) compressed to the budget.
- ``cifar-fast``: Nesterov, lr 0.1 decaying linearly to 0, weight decay 5e-4, label smoothing 0.1.

This is a long job (hours on 2 CPU cores): ``make bench`` runs it last; ``--quick`` is a smoke test on
synthetic data. A finished run directory is reused when the same command runs again. Runs made by
hand with ``resnetlab train`` are read with ``--curve-from RUN_DIR ...`` (nothing is trained). Either
way the accuracy-against-minutes curve is drawn to ``--curve``.

Usage: ``python benchmarks/bench_time_to_accuracy.py --max-minutes 120 [--recipes cifar-fast,cifar-paper]``
or ``python benchmarks/bench_time_to_accuracy.py --curve-from runs/fast runs/paper --curve docs/x.png``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from common import RESULTS_DIR, add_common_args, bench_environment, print_table, save_json, setup
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.engine.trainer import train
from resnetlab.recipes import get_recipe
from resnetlab.reporting import figures

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.9125)  # test top-1 accuracy; 0.9125 is the paper's ResNet-20
# Every evaluation sees the whole CIFAR-10 test split (the engine's default is a 1,000-image subset).
TEST_IMAGES = 10_000
RECIPES = ("cifar-fast", "cifar-paper")
EPOCH_IMAGES = 50_000  # CIFAR-10's training split


def threshold_key(t: float) -> str:
    """How a threshold is named in results: 80%, 91.25%."""
    return f"{100 * t:g}%"


def crossings(rows: list[dict[str, Any]], split: str = "test") -> dict[str, dict[str, Any] | None]:
    """For each threshold, the first evaluation of ``split`` that reached it (None if none did).

    ``time_s`` is wall time since the start of the run, evaluations included. ``train_time_s`` leaves
    out every evaluation up to that point (their ``eval_s``); it is None for runs whose metrics
    predate ``eval_s``.
    """
    spent: float | None = 0.0
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["kind"] != "eval":
            continue
        spent = None if spent is None or "eval_s" not in r else spent + r["eval_s"]
        if r["split"] != split:
            continue
        accuracy = 1.0 - r["top1_error"]
        for t in THRESHOLDS:
            key = threshold_key(t)
            if key not in found and accuracy >= t:
                found[key] = {
                    "time_s": r["time_s"],
                    "train_time_s": None if spent is None else r["time_s"] - spent,
                    "iteration": r["iteration"],
                    "epoch": r["epoch"],
                    "accuracy": accuracy,
                }
    return {threshold_key(t): found.get(threshold_key(t)) for t in THRESHOLDS}


def accuracy_curve(rows: list[dict[str, Any]], split: str = "test") -> list[tuple[float, float]]:
    """(wall minutes since the start, accuracy) of every evaluation of ``split``, in order."""
    return [
        (r["time_s"] / 60, 1.0 - r["top1_error"]) for r in rows if r["kind"] == "eval" and r["split"] == split
    ]


def describe_run(run_dir: Path, budget_minutes: float | None = None) -> dict[str, Any]:
    """What the tables and the curve need from a finished run directory: recipe, length, crossings."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = read_summary(run_dir)
    rows = read_metrics(run_dir)
    return {
        "recipe": config["recipe"]["name"],
        "recipe_fields": config["recipe"],
        "normalization": config.get("normalization"),
        "budget_minutes": budget_minutes if budget_minutes is not None else config.get("budget_minutes"),
        "run_dir": str(run_dir),
        "iterations": summary.get("iterations"),
        "epochs": summary.get("epochs"),
        "wall_time_s": summary.get("wall_time_s"),
        "final_test_accuracy": 1.0 - summary["final"]["top1_error"],
        "reached": crossings(rows),
        "curve": accuracy_curve(rows),
    }


def run_one(
    name: str, length: tuple[str, float], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Train one run of ``length`` (("minutes", M) or ("epochs", E)), or reuse a finished one, and
    describe it."""
    recipe = get_recipe(name, **({"test_flip": True} if args.test_flip else {}))
    if args.quick:
        recipe = replace(recipe, batch_size=32)
    unit, amount = length
    iterations = round(amount * EPOCH_IMAGES / recipe.batch_size) if unit == "epochs" else None
    config = TrainConfig(
        model="resnet20",
        dataset=args.dataset,
        data_dir=args.data_dir,
        recipe=recipe,
        out=args.out / f"{name}-{amount:g}{'ep' if unit == 'epochs' else 'min'}",
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=device.type == "cuda",
        iterations=iterations,
        budget_minutes=amount if unit == "minutes" else None,
        val_split=0,
        eval_every=args.eval_every,
        eval_limit=TEST_IMAGES,
        quiet=args.quick,
    )
    return describe_run(train(config).out, amount if unit == "minutes" else None)


def draw(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """The accuracy-against-minutes figure of ``runs``, with the thresholds marked."""
    series = {
        f"{r['recipe']} ({r['budget_minutes']:g}-min budget)" if r["budget_minutes"] else r["recipe"]: r[
            "curve"
        ]
        for r in runs
    }
    return figures.accuracy_against_minutes(series, THRESHOLDS, path, title)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or read) the budgeted trainings, print when each threshold was reached, draw the curve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument(
        "--max-minutes", default="120", help="budget per run in minutes; a comma-separated list runs each"
    )
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument(
        "--epochs", help="length of each run in epochs instead of minutes; a comma-separated list runs each"
    )
    parser.add_argument("--dataset", default="cifar10", help="dataset spec (default: %(default)s)")
    parser.add_argument("--data-dir", help="where the dataset is (default: the library's cache)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--test-flip", action="store_true", help="evaluate each image and its mirror")
    parser.add_argument("--eval-every", type=int, default=390, help="iterations between test evaluations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "time-to-accuracy", help="run directories")
    parser.add_argument(
        "--curve-from",
        type=Path,
        nargs="+",
        metavar="RUN_DIR",
        help="read these finished runs, train nothing",
    )
    parser.add_argument(
        "--curve", type=Path, help="where to draw the figure (default: OUT/time-to-accuracy.png)"
    )
    args = parser.parse_args(argv)
    if args.quick:  # a half-minute smoke test of the whole path on a small synthetic set
        args.dataset, args.max_minutes, args.eval_every = "synthetic:512,256,16,10", "0.5", 8
        args.recipes, args.out = "cifar-fast", args.out.with_name(args.out.name + "-quick")
    device = setup(args)
    if args.curve_from:
        runs = [describe_run(run_dir) for run_dir in args.curve_from]
    else:
        lengths = (
            [("epochs", float(e)) for e in args.epochs.split(",")]
            if args.epochs
            else [("minutes", float(m)) for m in args.max_minutes.split(",")]
        )
        runs = [run_one(name, n, args, device) for n in lengths for name in args.recipes.split(",")]
    results = {
        "benchmark": "time_to_accuracy",
        "quick": args.quick,
        "environment": bench_environment(device),
        "dataset": args.dataset,
        "model": "resnet20",
        "runs": runs,
    }
    table = []
    for r in runs:
        budget = f" ({r['budget_minutes']:g} min)" if r["budget_minutes"] else ""
        cells = [f"{r['recipe']}{budget}", f"{100 * r['final_test_accuracy']:.2f}"]
        for key in (threshold_key(t) for t in THRESHOLDS):
            hit = r["reached"][key]
            if hit is None:
                cells.append("not reached")
            else:
                train_time = "-" if hit["train_time_s"] is None else f"{hit['train_time_s'] / 60:.1f}"
                cells.append(f"{hit['time_s'] / 60:.1f} ({train_time}) at epoch {hit['epoch']:.0f}")
        table.append(cells)
    print_table(
        "Time to test accuracy, ResNet-20: minutes of wall time (without evaluations)",
        ["recipe (budget)", "final acc %", *(f"to {threshold_key(t)}" for t in THRESHOLDS)],
        table,
    )
    curve = args.curve or args.out / "time-to-accuracy.png"
    print(f"curve: {draw(runs, curve, 'ResNet-20 test accuracy against wall time')}")
    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
