"""What the reproductions share: options, run naming, training through the engine, time budgets,
reading metrics files, seed statistics, verdict helpers and the experiment records.

Every trained net lives in ``OUT/runs/<name>`` (an engine run directory); its name says what it is,
e.g. ``plain-56-400it-seed0``, so any reproduction pointed at the same ``OUT`` finds and reuses it.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from resnetlab.atomic import atomic_write
from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import TensorBatches
from resnetlab.engine import TrainConfig, train
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnetlab.engine.config import resolve_mode
from resnetlab.engine.distributed import device_name, select_device
from resnetlab.engine.rundir import AUTO_FIELDS, environment, read_metrics, read_summary
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.figures import Curve
from resnetlab.models import ResNet, build_model, list_models
from resnetlab.recipes import WARMUP_DEPTH, Recipe, get_recipe

MIN_GAP = 0.01  # smallest error difference (fraction) we call a difference, whatever the seeds say


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


@dataclass(frozen=True)
class Net:
    """A CIFAR network of the paper: depth 6n+2, plain or residual, shortcut option A/B/C."""

    depth: int
    residual: bool
    shortcut: str = "A"

    def __post_init__(self) -> None:
        check_depth(self.depth)

    @property
    def name(self) -> str:
        """File-system name: plain-20, resnet-56, resnet-20-B."""
        base = f"{'resnet' if self.residual else 'plain'}-{self.depth}"
        return base if self.shortcut == "A" else f"{base}-{self.shortcut}"

    @property
    def label(self) -> str:
        """Name in figures and tables, as the paper writes it: plain-20, ResNet-56, ResNet-20 (B)."""
        base = f"{'ResNet' if self.residual else 'plain'}-{self.depth}"
        return base if self.shortcut == "A" else f"{base} ({self.shortcut})"

    def model(self) -> tuple[str, dict[str, Any]]:
        """(registered name, overrides) for the engine; unregistered depths override the layers."""
        name = f"{'resnet' if self.residual else 'plain'}{self.depth}"
        overrides: dict[str, Any] = {} if self.shortcut == "A" else {"shortcut": self.shortcut}
        if name not in list_models():
            name = "resnet20" if self.residual else "plain20"
            overrides["layers"] = [(self.depth - 2) // 6] * 3
        return name, overrides

    def build(self, num_classes: int = 10) -> ResNet:
        """A freshly initialised network (He init, as the engine builds it)."""
        name, overrides = self.model()
        return build_model(name, num_classes=num_classes, **overrides)


def check_depth(depth: int) -> int:
    """``depth`` if it is a CIFAR depth 6n+2 (n >= 1), else a UserError."""
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"CIFAR nets have depth 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    return depth


def parse_depths(text: str, count: int | None = None) -> tuple[int, ...]:
    """'20,56' -> (20, 56), each checked; ``count`` demands exactly that many."""
    try:
        depths = tuple(dict.fromkeys(int(d) for d in text.split(",") if d.strip()))
    except ValueError:
        raise UserError(f"--depths must be comma-separated integers like 20,56, got {text!r}") from None
    if not depths or (count is not None and len(depths) != count):
        raise UserError(f"--depths needs {count or 'at least one'} depth(s), got {text!r}")
    return tuple(check_depth(d) for d in depths)


def recipe_for_depth(depth: int, batch_size: int) -> Recipe:
    """The paper's CIFAR recipe; depth >= 110 adds its warm-up (lr 0.01 until training error < 80%)."""
    recipe = get_recipe("cifar-paper", batch_size=batch_size)
    return replace(recipe, warmup_lr=0.01) if depth >= WARMUP_DEPTH else recipe


def run_dir(opts: Options, net: Net, iterations: int, seed: int) -> Path:
    return opts.out / "runs" / f"{net.name}-{iterations}it-seed{seed}"


def train_config(opts: Options, net: Net, iterations: int, seed: int) -> TrainConfig:
    """The engine config of one run: the paper's recipe scaled to ``iterations``, few evaluations."""
    name, overrides = net.model()
    config = TrainConfig(
        model=name,
        model_overrides=overrides,
        dataset=opts.dataset,
        data_dir=opts.data_dir,
        recipe=recipe_for_depth(net.depth, opts.batch_size),
        out=run_dir(opts, net, iterations, seed),
        seed=seed,
        device=opts.device,
        precision=opts.precision,
        # 1.2x faster on 2 CPU cores for ResNet-20/56 (measured); every CIFAR net is >= 16 channels wide.
        memory_format="channels_last",
        iterations=iterations,
        eval_every=max(1, iterations // (opts.evals + 1)) if opts.evals else iterations,
        eval_limit=opts.eval_limit,
        quiet=opts.quiet,
    )
    return resolve_mode(config, select_device(opts.device))


EVALUATION_FIELDS = ("log_every", "eval_every", "eval_limit", "checkpoint_every")  # do not change the weights


def _reusable(config: TrainConfig, net: Net) -> TrainConfig:
    """``config`` with a finished run's evaluation settings, so it is reused whatever they were.

    Any other difference (dataset, batch size, ...) is a UserError naming the fields: the folder
    holds a different experiment under the same name.
    """
    stored = yaml.safe_load((config.out / "config.yaml").read_text()) or {}
    config = replace(config, **{k: stored[k] for k in EVALUATION_FIELDS if k in stored})
    differ = [
        k
        for k, v in config.identity().items()
        if not (k in AUTO_FIELDS and v in (None, "auto")) and stored.get(k) != v
    ]
    if differ:
        raise UserError(
            f"{config.out} holds a finished {net.label} run with a different {', '.join(differ)}: "
            "give another --out, or delete that folder to retrain it"
        )
    return config


def train_run(opts: Options, net: Net, iterations: int, seed: int) -> Path:
    """Train one net (or reuse the finished run; an interrupted one resumes); returns its run dir."""
    config = train_config(opts, net, iterations, seed)
    out = config.out
    if (out / "summary.json").is_file() and (out / "config.yaml").is_file():
        config = _reusable(config, net)
    elif (out / CHECKPOINT_NAME).is_file():
        config = replace(config, resume=out)
    elif out.is_dir() and any(out.iterdir()):
        config = replace(config, overwrite=True)  # died before its first checkpoint: nothing to keep
    if not opts.quiet:
        print(f"== {net.label}, seed {seed}, {iterations} iterations -> {out}", flush=True)
    train(config)
    return out


def train_all(opts: Options, nets: list[Net], iterations: int) -> dict[tuple[Net, int], Path]:
    """Train every net with every seed (same seed = same initialisation stream and data order)."""
    return {(n, s): train_run(opts, n, iterations, s) for s in range(opts.seeds) for n in nets}


# ---- reading finished runs ----------------------------------------------------------------------


def final_train_error(rows: list[dict[str, Any]], fraction: float = 0.1) -> float:
    """Mean training error over the log intervals of the last ``fraction`` of the iterations."""
    train_rows = [r for r in rows if r["kind"] == "train"]
    if not train_rows:
        raise ValueError("no training rows")
    last = train_rows[-1]["iteration"]
    tail = [r["train_error"] for r in train_rows if r["iteration"] > last * (1 - fraction)]
    return statistics.fmean(tail or [train_rows[-1]["train_error"]])


def final_test_error(run: Path) -> float:
    """Top-1 error of the final evaluation on the whole test (or val) split."""
    return float(read_summary(run)["final"]["top1_error"])


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


# ---- statistics over seeds and verdicts ---------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of a quantity over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(
            statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)
        )

    def __str__(self) -> str:
        """As a percentage (errors are fractions): '62.00%' or '62.00 ± 1.20%' over several seeds."""
        if self.n == 1:
            return f"{100 * self.mean:.2f}%"
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f}%"


def clearly_above(high: Stat, low: Stat) -> bool:
    """True when ``high`` exceeds ``low`` by more than MIN_GAP and more than their seed stds together."""
    return high.mean - low.mean > max(MIN_GAP, high.std + low.std)


# ---- records ------------------------------------------------------------------------------------


def record_path(out: Path, experiment: str) -> Path:
    return out / f"{experiment}.json"


def run_entries(out: Path, runs: dict[tuple[Net, int], Path]) -> list[dict[str, Any]]:
    """How a record lists its runs: the net, the seed and the run folder relative to ``out``."""
    return [
        {
            "depth": n.depth,
            "residual": n.residual,
            "shortcut": n.shortcut,
            "seed": s,
            "dir": str(p.relative_to(out)),
        }
        for (n, s), p in runs.items()
    ]


def base_record(
    experiment: str,
    opts: Options,
    iterations: int | None,
    started: float,
    runs: dict[tuple[Net, int], Path] | None = None,
) -> dict[str, Any]:
    """What every record holds: command, environment, budget, options, runs and wall times."""
    env = environment(device_name(select_device(opts.device)), 1)
    runs = runs or {}
    return {
        "experiment": experiment,
        **env,
        "torch_threads": torch.get_num_threads(),
        "dataset": opts.dataset,
        "seeds": opts.seeds,
        "batch_size": opts.batch_size,
        "budget": {
            "iterations": iterations,
            "minutes": opts.budget_minutes,
            "requested_iterations": opts.budget_iterations,
        },
        "runs": run_entries(opts.out, runs),
        "runs_wall_time_s": sum(read_summary(p)["wall_time_s"] for p in runs.values()),
        "wall_time_s": time.perf_counter() - started,
    }


def write_record(out: Path, record: dict[str, Any]) -> Path:
    path = record_path(out, record["experiment"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{path} is missing or corrupt: rerun the reproduce command that writes it") from None


def section_meta(record: dict[str, Any]) -> dict[str, str]:
    """The report lines every section starts with."""
    budget = record["budget"]
    how = f"{budget['iterations']:,} iterations per run" if budget["iterations"] else "no nets trained"
    if budget["minutes"] and budget["iterations"]:
        how += f" (from --budget-minutes {budget['minutes']:g} for the whole reproduction)"
    return {
        "command": record["command"],
        "versions": f"resnetlab {record['resnetlab_version']}, torch {record['torch_version']}",
        "device": f"{record['device']} ({record['torch_threads']} threads)",
        "dataset": record["dataset"],
        "budget": f"{how}, batch {record['batch_size']}, {record['seeds']} seed(s)",
        "wall time": f"{record['wall_time_s']:.0f} s for this command; its runs trained for "
        f"{record['runs_wall_time_s']:.0f} s in all (reused runs count where they were first trained)",
    }
