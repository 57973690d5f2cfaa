"""Training the reproductions' nets through the engine: one run per net and seed, the nets of a seed
trained side by side as one fleet, finished runs reused.

Every trained net lives in ``OUT/runs/<name>`` (an engine run directory); its name says what it is,
e.g. ``plain-56-400it-seed0``, so any reproduction pointed at the same ``OUT`` finds and reuses it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from resnetlab.engine import TrainConfig, train, train_fleet
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnetlab.engine.config import resolve_mode
from resnetlab.engine.distributed import select_device
from resnetlab.engine.rundir import AUTO_FIELDS
from resnetlab.errors import UserError
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.options import Options
from resnetlab.recipes import WARMUP_DEPTH, Recipe, get_recipe


def recipe_for_depth(depth: int, batch_size: int) -> Recipe:
    """The paper's CIFAR recipe; depth >= 110 adds its warm-up (lr 0.01 until training error < 80%)."""
    recipe = get_recipe("cifar-paper", batch_size=batch_size)
    return replace(recipe, warmup_lr=0.01) if depth >= WARMUP_DEPTH else recipe


def run_dir(opts: Options, net: CifarNet, iterations: int, seed: int) -> Path:
    """The run folder of one net and seed: ``OUT/runs/NAME-ITERATIONSit-seedSEED``."""
    return opts.out / "runs" / f"{net.name}-{iterations}it-seed{seed}"


def train_config(opts: Options, net: CifarNet, iterations: int, seed: int) -> TrainConfig:
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


def _reusable(config: TrainConfig, net: CifarNet) -> TrainConfig:
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


def run_config(opts: Options, net: CifarNet, iterations: int, seed: int) -> TrainConfig:
    """The config that trains one net, reuses its finished run, or resumes its interrupted one."""
    config = train_config(opts, net, iterations, seed)
    out = config.out
    if (out / "summary.json").is_file() and (out / "config.yaml").is_file():
        return _reusable(config, net)
    if (out / CHECKPOINT_NAME).is_file():
        return replace(config, resume=out)
    if out.is_dir() and any(out.iterdir()):
        return replace(config, overwrite=True)  # died before its first checkpoint: nothing to keep
    return config


def train_run(opts: Options, net: CifarNet, iterations: int, seed: int) -> Path:
    """Train one net (or reuse the finished run; an interrupted one resumes); returns its run dir."""
    return train_seed(opts, [net], iterations, seed)[net]


def train_seed(opts: Options, nets: list[CifarNet], iterations: int, seed: int) -> dict[CifarNet, Path]:
    """Train ``nets`` with one seed as fleets (side by side on the same batches): the fresh ones
    together, the interrupted ones together by the iteration they stopped at; finished runs are
    reused. Returns each net's run directory."""
    configs = {net: run_config(opts, net, iterations, seed) for net in nets}
    groups: dict[object, list[CifarNet]] = {}
    for net, config in configs.items():
        key = "done" if (config.out / "summary.json").is_file() else _stopped_at(config)
        groups.setdefault(key, []).append(net)
    for key, members in groups.items():
        if not opts.quiet:
            for net in members:
                print(
                    f"== {net.label}, seed {seed}, {iterations} iterations -> {configs[net].out}", flush=True
                )
        if key == "done":
            for net in members:
                train(configs[net])  # finds the finished run and reuses it
        else:
            train_fleet([configs[net] for net in members])
    return {net: configs[net].out for net in nets}


def _stopped_at(config: TrainConfig) -> int | None:
    """The iteration an interrupted run's checkpoint holds (None for a fresh run)."""
    if config.resume is None:
        return None
    return int(load_checkpoint(config.out / CHECKPOINT_NAME)["iteration"])


def train_all(opts: Options, nets: list[CifarNet], iterations: int) -> dict[tuple[CifarNet, int], Path]:
    """Train every net with every seed (same seed = same initialisation stream and data order), the
    nets of one seed as one fleet."""
    runs = {}
    for seed in range(opts.seeds):
        runs |= {(net, seed): out for net, out in train_seed(opts, nets, iterations, seed).items()}
    return runs
