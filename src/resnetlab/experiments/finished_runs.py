"""Reading finished runs: whether a run finished, final errors, seed-averaged curves, the trained net
and its data."""

from __future__ import annotations

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
from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
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


def final_train_error(rows: list[dict[str, Any]], fraction: float = 0.1) -> float:
    """Mean training error over the log intervals of the last ``fraction`` of the iterations."""
    train_rows = [r for r in rows if r["kind"] == "train"]
    if not train_rows:
        raise ValueError("no training rows")
    last = train_rows[-1]["iteration"]
    tail = [r["train_error"] for r in train_rows if r["iteration"] > last * (1 - fraction)]
    return statistics.fmean(tail or [train_rows[-1]["train_error"]])


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
