"""Lesion study of given trained nets (Veit, Wilber & Belongie, NeurIPS 2016):
``reproduce lesion --nets REF,REF,...``.

Nothing is trained. Each net is evaluated on the test split with its own preprocessing, BN in eval
mode: intact, with every single block deleted in turn (a residual block keeps its shortcut, a plain
block becomes the identity where the shapes allow, see :mod:`resnetlab.analysis.lesion`), and with
k randomly chosen blocks deleted for k = 2 .. n, ``draws`` distinct draws per k (seeded). The random
draws choose among the n blocks that keep the shape, the blocks both a ResNet and its plain twin can
lose, so twins lose the very same blocks; k = 1 is the mean over all n single deletions.

This module measures (through :func:`resnetlab.experiments.studies.run`, the path every study of
trained nets takes) and declares the command; :mod:`~resnetlab.experiments.lesion_verdicts` judges
(thresholds, verdicts) and :mod:`~resnetlab.experiments.lesion_report` presents (tables, figures).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import torch

from resnetlab.analysis.lesion import BlockSite, block_sites, lesion_errors
from resnetlab.data.loader import seeded_generator
from resnetlab.experiments import studies, trained_nets
from resnetlab.experiments.declaration import Experiment, arg, positive_int
from resnetlab.experiments.lesion_report import section
from resnetlab.experiments.options import Options
from resnetlab.experiments.studies import Bench
from resnetlab.experiments.trained_nets import TrainedNet

NAME = "lesion"
DEFAULT_DRAWS = 5


def deletion_sets(sites: list[BlockSite], draws: int, seed: int) -> dict[int, list[tuple[int, ...]]]:
    """k -> sets of k block indices (k >= 2) among the blocks that keep the shape: every combination
    where there are at most ``draws``, else ``draws`` distinct ones drawn with generator (seed, k)."""
    keep = [s.index for s in sites if not s.shape_changes]
    out: dict[int, list[tuple[int, ...]]] = {}
    for k in range(2, len(keep) + 1):
        if math.comb(len(keep), k) <= draws:
            out[k] = list(itertools.combinations(keep, k))
            continue
        gen = seeded_generator(seed, k)
        chosen: dict[tuple[int, ...], None] = {}
        while len(chosen) < draws:
            pick = torch.randperm(len(keep), generator=gen)[:k].tolist()
            chosen.setdefault(tuple(sorted(keep[i] for i in pick)), None)
        out[k] = list(chosen)
    return out


def _measure(net: TrainedNet, bench: Bench, draws: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    opts, device, mode = bench.opts, bench.device, bench.mode
    model = trained_nets.prepare(net, device, mode)
    batches = trained_nets.test_batches(net, bench.dataset, opts.data_dir, opts.batch_size, device, mode)
    sites = block_sites(model)
    singles = [s.index for s in sites if s.deletable]
    multi = deletion_sets(sites, draws, seed)
    sets = [(i,) for i in singles] + [s for k in sorted(multi) for s in multi[k]]
    bench.say(f"== {net.info['label']}: {net.info['ref']}, {len(sets) + 1} evaluations")
    bf16 = mode.precision == "bf16"
    kw = {"device": device, "limit": opts.eval_limit}
    measured = lesion_errors(model, batches, sets, autocast=bf16, **kw)
    # the accuracy check of bf16: the intact net once more in fp32, on the same images
    fp32 = lesion_errors(model, batches, [], **kw).intact if bf16 else measured.intact
    single = dict(zip(singles, measured.deleted, strict=False))
    rest = iter(measured.deleted[len(singles) :])
    keep = [s.index for s in sites if not s.shape_changes]
    curve = [{"k": 1, "sets": [[i] for i in keep], "errors": [single[i] for i in keep]}]
    curve += [
        {"k": k, "sets": [list(s) for s in multi[k]], "errors": [next(rest) for _ in multi[k]]}
        for k in sorted(multi)
    ]
    return net.info | {
        "dataset": bench.dataset or net.info["trained_on"],
        "images": measured.images,
        "intact_error": measured.intact,
        "intact_error_fp32": fp32,
        "blocks": [
            {
                "index": s.index,
                "name": s.name,
                "shape_changes": s.shape_changes,
                "deletable": s.deletable,
                "error": single.get(s.index),
            }
            for s in sites
        ],
        "k_curve": curve,
        "wall_time_s": time.perf_counter() - started,
    }


def run(
    opts: Options, nets: tuple[str, ...], dataset: str | None, draws: int = DEFAULT_DRAWS, seed: int = 0
) -> dict[str, Any]:
    """Measure every net's lesion errors (or reuse what ``opts.out`` keeps of them); write and
    return the record."""
    settings = {"eval_limit": opts.eval_limit, "draws": draws, "seed": seed}
    return studies.run(NAME, opts, nets, dataset, settings, lambda n, b: _measure(n, b, draws, seed))


EXPERIMENT = Experiment(
    name=NAME,
    order=70,
    summary="test error of trained nets with blocks deleted (Veit et al. 2016): each single block, then k "
    "random blocks, plain twins beside ResNets",
    run=run,
    section=section,
    trains=False,
    args=(
        arg("--eval-limit", "test images per evaluation (default: all)", type=positive_int),
        arg(
            "--draws",
            "random deletion sets per k (default: %(default)s)",
            type=positive_int,
            default=DEFAULT_DRAWS,
        ),
    ),
    kwargs=lambda args: {"draws": args.draws},
    cost="per net, one pass over the test set per deletable block plus DRAWS per k = 2..n, each starting "
    "at its first deleted block (bf16 where native); --eval-limit for less; times measured on one "
    "machine are in docs/studies.md of the resnetlab repository",
)
