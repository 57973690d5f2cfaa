"""Reading finished runs: whether a run finished, the finished runs given on the command line
(``--runs DIR,...`` of the experiments that can train nothing), final errors, seed-averaged curves,
the trained net and its data."""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import TensorBatches
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.distributed import select_device
from resnetlab.engine.run_status import find_runs
from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.experiments.cifar_nets import CifarNet, net_of, parse_depths
from resnetlab.experiments.declaration import Arg, arg, train_nothing
from resnetlab.experiments.options import Options
from resnetlab.models import ResNet
from resnetlab.reporting.figures import Curve


@dataclass(frozen=True)
class FinishedRun:
    """A run directory whose training finished: its summary.json and the config it trained with."""

    path: Path
    summary: dict[str, Any]
    config: TrainConfig

    @property
    def iterations(self) -> int:
        """The iterations it trained for (all it was asked for: the run finished)."""
        return int(self.summary["iterations"])


def read_finished(run: Path) -> FinishedRun:
    """The finished run in directory ``run`` (of `resnetlab train`, a reproduction or the GPU fleet
    script); an unfinished one is a one-line UserError saying where it stands."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run} is not a directory (give the --out directory of a training run)")
    if not (run / "summary.json").is_file():
        if not (run / CHECKPOINT_NAME).is_file():
            raise UserError(f"{run} is not a run directory (it has no summary.json and no {CHECKPOINT_NAME})")
        raise _unfinished(run)
    summary = read_summary(run)
    if summary.get("complete") is False:  # the GPU fleet script writes its runs' state as it goes
        raise _unfinished(run)
    return FinishedRun(run, summary, run_config(run))


@dataclass(frozen=True)
class GivenRuns:
    """Finished runs of the paper's CIFAR nets given with ``--runs``, checked: by (net, seed), and the
    one data set and the one recipe (by name) they share."""

    runs: dict[tuple[CifarNet, int], Path]
    dataset: str
    recipe: str
    batch_size: int


def given_runs(paths: tuple[Path, ...], recipe: str | None = None, needs: str = "") -> GivenRuns:
    """The finished runs of the paper's CIFAR nets in ``paths`` (run directories, or folders holding
    them directly or in ``runs/``), each checked: all on one data set and with one recipe, ``recipe``
    where one is named (``needs`` says who needs it: "Table 6 rows"). Each refusal is one UserError
    line naming the runs."""
    found: dict[tuple[CifarNet, int], Path] = {}
    datasets: dict[str, Path] = {}
    recipes: dict[str, Path] = {}
    batches: dict[int, Path] = {}
    for path in find_runs(list(paths)):
        config = read_finished(path).config
        net = net_of(config.model, config.model_overrides)
        if net is None:
            raise UserError(
                f"{path} trained {config.model} with {config.model_overrides}: not one of the paper's CIFAR "
                "nets (depth 6n+2, 16/32/64 channels)"
            )
        if recipe is not None and config.recipe.name != recipe:
            raise UserError(
                f"{path} trained with the {config.recipe.name} recipe: {needs} need the {recipe} recipe "
                "(at any length)"
            )
        if (net, config.seed) in found:
            raise UserError(
                f"{found[net, config.seed]} and {path} are both {net.label} with seed {config.seed}: give one"
            )
        found[net, config.seed] = path
        datasets.setdefault(config.dataset, path)
        recipes.setdefault(config.recipe.name, path)
        batches.setdefault(config.recipe.batch_size, path)
    _one(datasets, "were trained on different data", "on", "give runs on one data set")
    _one(recipes, "were trained with different recipes", "with", "give runs of one recipe")
    _one(batches, "were trained in different batch sizes", "in batches of", "give runs of one batch size")
    return GivenRuns(found, next(iter(datasets)), next(iter(recipes)), next(iter(batches)))


def _one(seen: dict[str, Path], differ: str, by: str, fix: str) -> None:
    """Refuse runs that do not share one value (``seen``: each value, and the first run with it)."""
    if len(seen) > 1:
        which = ", ".join(f"{path} {by} {value}" for value, path in seen.items())
        raise UserError(f"the runs {differ} ({which}): {fix}")


def runs_arg(help: str) -> Arg:
    """The ``--runs`` option of an experiment that can take finished runs instead of training
    (``help`` says what it makes of them); it excludes the options of the same ``exclusive`` name
    ("runs"), such as ``--depths``."""
    return arg(
        "--runs",
        f"train nothing: {help} (run directories of `resnetlab train` or benchmarks/paper_schedule_gpu.py, "
        "or folders of them); an unfinished run is refused",
        metavar="DIR,DIR,...",
        exclusive="runs",
    )


def depths_or_runs(args: argparse.Namespace) -> dict[str, Any]:
    """The run function's keywords of an experiment with ``--depths`` and :func:`runs_arg`: the
    depths to train, or the finished runs (refusing the training options and ``--dataset``)."""
    if args.runs is None:
        return {"depths": parse_depths(args.depths)}
    paths = tuple(Path(r.strip()) for r in args.runs.split(",") if r.strip())
    if not paths:
        raise UserError(f"--runs needs comma-separated run directories, got {args.runs!r}")
    train_nothing(args, "--runs reads finished runs")
    if args.dataset is not None:
        raise UserError("--runs reads finished runs, each with the data it was trained on: drop --dataset")
    return {"runs": paths}


def run_config(run: Path) -> TrainConfig:
    """The config a run trained with: its config.yaml, or its checkpoint's where there is none."""
    path = run / "config.yaml"
    if path.is_file():
        try:
            stored = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    else:
        stored = load_checkpoint(run / CHECKPOINT_NAME).get("config")
    if not isinstance(stored, dict):
        raise UserError(f"{run} records no training config (neither config.yaml nor one in its checkpoint)")
    return TrainConfig.from_dict(stored)


def _unfinished(run: Path) -> UserError:
    """The error for a run that has not finished: how far it got, and its latest test error."""
    rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    done = max((r["iteration"] for r in rows), default=0)
    total = run_config(run).total_iterations()
    where = f"iteration {done:,} of {total:,}" if total else f"iteration {done:,}"
    evals = [r for r in rows if r["kind"] == "eval"]
    if evals:
        last = evals[-1]
        seen = f" on {last['images']:,} images" if "images" in last else ""
        split = last.get("split", "test")
        where += (
            f"; latest {split} error {100 * last['top1_error']:.2f}%{seen} at iteration {last['iteration']:,}"
        )
    how = (
        f"`resnetlab train --resume {run}`"
        if (run / "config.yaml").is_file()
        else "the command that trains it"
    )
    return UserError(f"{run} is unfinished ({where}): finish it with {how}, then run this again")


def final_test_error(run: Path) -> float:
    """Top-1 error of the final evaluation on the whole test split (val where the data has no test)."""
    final = read_summary(run)["final"]
    return float(final.get("test_top1_error", final["top1_error"]))


def mean_curve(runs: list[Path], label: str) -> Curve:
    """Training and test error curves of a net, averaged over its seeds (runs log at the same steps)."""
    per_run = [read_metrics(r) for r in runs]

    def points(rows: list[dict[str, Any]], kind: str, key: str) -> dict[int, float]:
        return {r["iteration"]: r[key] for r in rows if r["kind"] == kind}

    curve = Curve(label)
    for kind, key, xs, ys in (
        ("train", "train_error", curve.train_x, curve.train_y),
        ("eval", "top1_error", curve.test_x, curve.test_y),
    ):
        series = [points(rows, kind, key) for rows in per_run]
        for it in sorted(set.intersection(*(set(s) for s in series))):
            xs.append(it)
            ys.append(statistics.fmean(s[it] for s in series))
    return curve


def load_trained(run: Path) -> tuple[ResNet, dict[str, Any]]:
    """The trained net of a run (eval mode, CPU) and its checkpoint."""
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    return model_from_checkpoint(ckpt), ckpt


def split_batches(
    opts: Options, ckpt: dict[str, Any], split: str, limit: int | None = None, batch: int = 256
) -> TensorBatches:
    """Unaugmented batches of a split ("train" or "test") normalised as the run was trained."""
    data = load_dataset(opts.dataset, opts.data_dir)
    images = data.test if split == "test" else data.train
    if images is None:
        raise UserError(f"dataset {opts.dataset} has no {split} split")
    if limit is not None:
        images = images.subset(torch.arange(min(limit, len(images))))
    normalizer = Normalizer.from_state_dict(ckpt["normalizer"])
    return TensorBatches(images, batch, normalizer, train=False, device=select_device(opts.device))
