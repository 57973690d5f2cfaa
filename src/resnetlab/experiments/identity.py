"""Identity mappings (Sec. 3.1): hard for stacked nonlinear layers, free for residual blocks.

Part 1 trains K plain blocks and K residual blocks of the same width (the very same modules, with and
without the shortcut; each block is two conv-BN-ReLU layers) by SGD to reproduce their input maps,
and reports the error left. Part 2 is the paper's construction argument: a deeper net made of a
trained shallower one plus identity layers has exactly the shallower net's training error, so a
deeper plain net trained from scratch that does worse shows a failure of optimisation, not capacity.

Measured by :mod:`resnetlab.analysis.identity`, judged by :mod:`~.identity_verdicts`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from resnetlab.analysis.identity import MapSource, deepen, learn_identity, stack, train_error
from resnetlab.data.datasets import load_dataset
from resnetlab.engine.distributed import select_device
from resnetlab.errors import UserError
from resnetlab.experiments import degradation, finished_runs, records, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet, check_depth, parse_depths
from resnetlab.experiments.declaration import Experiment, arg, positive_int
from resnetlab.experiments.identity_verdicts import (
    construction_stats,
    construction_verdicts,
    learn_stats,
    learn_verdicts,
)
from resnetlab.experiments.options import Options
from resnetlab.experiments.stats import Stat
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, budget_note

NAME = "identity"
CLAIM = (
    "'If the added layers can be constructed as identity mappings, a deeper model should have training "
    "error no greater than its shallower counterpart' (Sec. 1); degradation suggests that solvers have "
    "difficulties approximating identity mappings by multiple nonlinear layers, while a residual block "
    "only has to drive its weights toward zero (Sec. 3.1)."
)


def _dataset_images(opts: Options) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to 4096 training and the first test images of ``--dataset`` for ``--inputs images``."""
    data = load_dataset(opts.dataset, opts.data_dir)
    if data.train is None or data.test is None:
        raise UserError(f"--inputs images needs a dataset with train and test splits, not {opts.dataset}")
    return data.train.images[:4096], data.test.images


def run(
    opts: Options,
    ks: tuple[int, ...] = (1, 2, 4, 8),
    width: int = 8,
    size: int = 8,
    steps: int = 300,
    inputs: str = "random",
    depths: tuple[int, int] | None = (20, 56),
    train_images: int = 2000,
) -> dict[str, Any]:
    """Part 1 for every K and seed; part 2 (unless ``depths`` is None) on trained nets of ``depths``."""
    started = time.perf_counter()
    device = select_device(opts.device)
    images = _dataset_images(opts) if inputs == "images" else None
    learned = []
    for seed in range(opts.seeds):
        for k in ks:
            for residual in (False, True):
                torch.manual_seed(seed)
                source = MapSource(width, size, seed + 1, images)
                error = learn_identity(stack(k, width, residual), source, steps, device)
                learned.append({"k": k, "residual": residual, "seed": seed, "error": error})
                if not opts.quiet:
                    print(
                        f"identity: K={k} {'residual' if residual else 'plain'} seed {seed}: {error:.4g}",
                        flush=True,
                    )
    iterations = construction = runs = None
    if depths is not None:
        nets = degradation.nets_for(depths)
        iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
        runs = training.train_all(opts, nets, iterations)
        construction = measure_construction(opts, runs, depths, train_images)
    record = records.base_record(NAME, opts, iterations, started, runs)
    record["learn"] = {
        "ks": list(ks),
        "width": width,
        "size": size,
        "steps": steps,
        "inputs": inputs,
        "rows": learned,
    }
    record["construction"] = construction
    records.write_record(opts.out, record)
    return record


def measure_construction(
    opts: Options, runs: dict[tuple[CifarNet, int], Path], depths: tuple[int, int], train_images: int
) -> dict[str, Any]:
    """Training error of the shallow nets, their identity-deepened copies and the deep nets from scratch."""
    shallow_depth, deep_depth = depths
    device = select_device(opts.device)
    rows, scored = [], 0
    for (net, seed), path in runs.items():
        if net.depth != shallow_depth:
            continue
        shallow, ckpt = finished_runs.load_trained(path)
        batches = finished_runs.split_batches(opts, ckpt, "train", train_images)
        scored = len(batches.images)
        scratch, _ = finished_runs.load_trained(runs[CifarNet(deep_depth, net.residual), seed])
        e_shallow, logits = train_error(shallow, batches, device)
        e_built, built_logits = train_error(deepen(shallow, check_depth(deep_depth)), batches, device)
        e_scratch, _ = train_error(scratch, batches, device)
        rows.append(
            {
                "residual": net.residual,
                "seed": seed,
                "shallow": e_shallow,
                "built": e_built,
                "scratch": e_scratch,
                "max_logit_diff": (logits - built_logits).abs().max().item(),
            }
        )
    return {"depths": list(depths), "train_images": scored, "rows": rows}


def section(out: Path, record: dict[str, Any]) -> Section:
    """Both parts: error vs K (figure, table, verdicts) and the construction (table, verdicts)."""
    learn = record["learn"]
    ks = learn["ks"]
    stats = learn_stats(record)
    unit = "remaining error (MSE / variance of the maps, log scale)"
    fig = figures.identity_error(
        ks,
        {
            "plain blocks": [stats[k, False].mean for k in ks],
            "residual blocks": [stats[k, True].mean for k in ks],
        },
        out / "figures" / "identity-vs-k.png",
        f"Learning the identity by SGD: {learn['width']} channels, {learn['size']}x{learn['size']} "
        f"{learn['inputs']} maps, {learn['steps']} steps",
        unit,
    )
    rows = [[str(k), _fmt(stats[k, False]), _fmt(stats[k, True])] for k in ks]
    sec = Section(
        title="Identity mappings and the construction argument (Sec. 1, Sec. 3.1)",
        claim=CLAIM,
        meta=records.section_meta(record),
        tables=[
            Table(
                "Part 1: remaining error after learning the identity", ["K blocks", "plain", "residual"], rows
            )
        ],
        verdicts=learn_verdicts(stats, ks),
        figures=[
            Figure(fig, "Error left after training K stacked blocks to reproduce their input; plain dashed.")
        ],
        notes=[
            "Part 1: each block is two conv-BN-ReLU layers (plain) or the same with the identity shortcut "
            "added before the second ReLU (residual), so both stacks have 2K conv layers.",
            "A residual stack at He initialisation adds a unit-variance residual per block, so its output "
            "starts far from the input for large K; gradient clipping and a warm-up keep SGD stable.",
        ],
    )
    if record.get("construction"):
        iterations = record["budget"]["iterations"]
        sec.budget_note = budget_note(iterations)
        sec.tables.append(_construction_table(record["construction"]))
        sec.verdicts += construction_verdicts(record["construction"], iterations)
    return sec


def _construction_table(construction: dict[str, Any]) -> Table:
    table = Table(
        f"Part 2: training error (eval mode, first {construction['train_images']:,} training images)",
        ["net", "how it was obtained", "training error"],
        [],
        "Max logit difference: largest |logit| change between the shallow net and its deepened copy.",
    )
    for c in construction_stats(construction):
        table.rows += [
            [c.small.label, "trained", str(c.shallow)],
            [
                f"{c.big.label} (built)",
                f"{c.small.label} + {c.extra} (max logit difference {c.diff:.2g})",
                str(c.built),
            ],
            [c.big.label, "trained from scratch", str(c.scratch)],
        ]
    return table


def _fmt(stat: Stat) -> str:
    return f"{stat.mean:.3g}" if stat.n == 1 else f"{stat.mean:.3g} ± {stat.std:.2g}"


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    depths = parse_depths(args.depths, count=2)
    if depths[0] >= depths[1]:
        raise UserError(f"--depths for identity is shallow,deep with shallow < deep, got {args.depths}")
    try:
        ks = tuple(sorted({int(k) for k in args.ks.split(",") if k.strip()}))
    except ValueError:
        ks = ()
    if not ks or ks[0] < 1:
        raise UserError(f"--ks must be positive integers like 1,2,4,8, got {args.ks!r}")
    return {
        "ks": ks,
        "width": args.width,
        "size": args.size,
        "steps": args.steps,
        "inputs": args.inputs,
        "depths": None if args.no_construction else depths,
        "train_images": args.train_images,
    }


EXPERIMENT = Experiment(
    name=NAME,
    order=40,
    summary="can stacked layers learn the identity? plain vs residual blocks; the construction argument",
    run=run,
    section=section,
    args=(
        arg("--ks", "numbers of stacked blocks K (default: %(default)s)", default="1,2,4,8"),
        arg("--width", "channels of the feature maps (default: 8)", type=positive_int, default=8),
        arg("--size", "height = width of the maps (default: 8)", type=positive_int, default=8),
        arg("--steps", "SGD steps per stack (default: 300)", type=positive_int, default=300),
        arg(
            "--inputs",
            "maps to reproduce: relu of Gaussian noise, or features of --dataset images (default: random)",
            choices=("random", "images"),
            default="random",
        ),
        arg(
            "--depths",
            "shallow,deep CIFAR depths of the construction (default: %(default)s)",
            default=degradation.DEPTHS_TEXT,
        ),
        arg("--no-construction", "skip the construction (no training)", action="store_true"),
        arg(
            "--train-images",
            "training images the construction is scored on",
            type=positive_int,
            default=2000,
        ),
    ),
    kwargs=_kwargs,
)
