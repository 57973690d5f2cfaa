"""Loss landscapes of given trained nets (Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018):
``reproduce landscape --nets REF,REF,...``.

Nothing is trained. For each net, on a fixed subset of its training images (the same images for
every net, each with its own normalisation) and with BN in eval mode on its running statistics:

- two filter-normalised random directions (seeded; the same Gaussian draws for nets of the same
  shape, so twins are cut along matching directions), see :mod:`resnetlab.analysis.landscape`;
- the loss and training accuracy along direction 1 (a 1-D line of 2N-1 points over [-S, S]) and over
  the N x N grid of the plane of both directions, under bf16 autocast where the device computes bf16
  natively (the fp32 loss at the centre is recorded beside, as the accuracy check);
- the Hessian's extreme eigenvalues at the trained weights, in fp32, from Lanczos on exact
  Hessian-vector products, and Li et al.'s non-convexity measure |lambda_min / lambda_max|;
- the same at K evenly spaced points of the 1-D line (``--hessian-points K``), where Li et al. map
  the measure over the plotted plane, not only at the trained weights (their Sec. 6, Fig. 7).

This module measures (through :func:`resnetlab.experiments.studies.run`, the path every study of
trained nets takes) and declares the command; :mod:`~resnetlab.experiments.landscape_verdicts`
judges and :mod:`~resnetlab.experiments.landscape_report` presents.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from resnetlab.analysis.landscape import (
    Extremes,
    evaluate_loss,
    filter_normalized_direction,
    hessian_extremes,
    hessian_line,
    scan,
)
from resnetlab.data.loader import seeded_generator
from resnetlab.errors import UserError
from resnetlab.experiments import studies, trained_nets
from resnetlab.experiments.declaration import Experiment, arg, positive_float, positive_int
from resnetlab.experiments.landscape_report import section
from resnetlab.experiments.options import Options
from resnetlab.experiments.studies import Bench
from resnetlab.experiments.trained_nets import TrainedNet

NAME = "landscape"
# Sized for 2 CPU cores (measured on the 20-layer pair, AVX512-BF16): 484 bf16 passes over 512 images
# and 30 Hessian-vector products took 6.5 min for plain-20. lambda_min needs the 30 steps: on
# ResNet-20 and plain-20 it is within 0.6% of its 40-step value by step 30, 10% short at step 20.
DEFAULT_IMAGES = 512
DEFAULT_GRID = 21
DEFAULT_SPAN = 1.0
DEFAULT_HESSIAN_STEPS = 30
# The Hessian at 5 points of the line, -S, -S/2, 0, S/2, S: the centre is the measurement above, so
# 4 more Lanczos runs, each as long as the centre's. That makes the Hessian phase 5 times as long and
# the study the longer for it (on the 20-layer pair the centre's phase took 326 s and 462 s of a
# measured 521 s and 557 s per net: about 4 x 326 s and 4 x 462 s more, an estimate, not a
# measurement). 3 points would cost half as much but see only the centre and the two ends of the
# span; the half-way points add the region between, away from the centre but not at its edge, where
# Li et al.'s maps can show a non-convex region. 1 keeps the old, centre-only cost.
DEFAULT_HESSIAN_POINTS = 5


def coordinates(points: int, span: float) -> list[float]:
    """``points`` evenly spaced steps from -span to span (exactly 0 among them when ``points`` is odd)."""
    if points < 2:
        raise UserError(f"a scan needs at least 2 points, got {points}")
    return [span * (2 * i - (points - 1)) / (points - 1) for i in range(points)]


def hessian_coordinates(points: int, span: float) -> list[float]:
    """Where the Hessian is measured along direction 1: the centre alone for 1 point, else
    :func:`coordinates`."""
    return [0.0] if points == 1 else coordinates(points, span)


def _extremes(at: float, h: Extremes) -> dict[str, Any]:
    return {
        "a": at,
        "lambda_max": h.lambda_max,
        "lambda_min": h.lambda_min,
        "ratio": h.ratio,
        "residual_max": h.residual_max,
        "residual_min": h.residual_min,
        "steps": h.steps,
    }


def _measure(net: TrainedNet, bench: Bench, settings: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    opts, device, mode = bench.opts, bench.device, bench.mode
    model = trained_nets.prepare(net, device, mode)
    batches = trained_nets.training_subset(
        net, bench.dataset, opts.data_dir, settings["images"], opts.batch_size, device, mode
    )
    gen = seeded_generator(settings["seed"])
    directions = [filter_normalized_direction(model, gen) for _ in range(2)]
    bf16 = mode.precision == "bf16"
    bench.say(f"== {net.info['label']}: {net.info['ref']}")
    times = {}

    def timed(what: str, fn):
        t = time.perf_counter()
        value = fn()
        times[what] = time.perf_counter() - t
        bench.say(f"   {what}: {times[what]:.0f} s")
        return value

    centre = timed("centre", lambda: evaluate_loss(model, batches))  # fp32: the reference
    centre_fast = evaluate_loss(model, batches, autocast=True) if bf16 else centre
    line_at = coordinates(settings["line"], settings["span"])
    grid_at = coordinates(settings["grid"], settings["span"])
    line = timed("line", lambda: scan(model, directions[:1], [(a,) for a in line_at], batches, autocast=bf16))
    points = [(x, y) for y in grid_at for x in grid_at]

    def progress(i: int) -> None:  # a line per tenth of the grid: it is most of the time
        if (i + 1) % max(1, len(points) // 10) == 0:
            bench.say(f"   grid {i + 1}/{len(points)} points")

    plane = timed("grid", lambda: scan(model, directions, points, batches, autocast=bf16, progress=progress))
    # Double backpropagation runs 1.6x faster in the contiguous format than channels_last (2 CPU cores,
    # ResNet-20, measured), and it stays fp32 whatever the scans used.
    model = model.to(memory_format=torch.contiguous_format)
    flat = [(x.contiguous(), y) for x, y in batches]
    steps = settings["hessian_steps"]

    def start() -> torch.Generator:  # the same Lanczos start vector at every point
        return seeded_generator(settings["seed"], 1)

    hessian = timed("hessian", lambda: hessian_extremes(model, flat, steps, start()))
    hessian_at = hessian_coordinates(settings["hessian_points"], settings["span"])
    off = [a for a in hessian_at if a != 0]

    def progress_line(i: int) -> None:
        bench.say(f"   hessian at a = {hessian_at[i]:g} ({i + 1}/{len(hessian_at)})")

    def line_hessian() -> list[Extremes]:  # the centre's own measurement at a = 0
        return hessian_line(model, directions[0], hessian_at, flat, steps, start, hessian, progress_line)

    along = timed("hessian_line", line_hessian) if off else [hessian]
    n = len(grid_at)
    return net.info | {
        "dataset": bench.dataset or net.info["trained_on"],
        "images": sum(y.shape[0] for _, y in batches),
        "centre_loss": centre.loss,
        "centre_accuracy": centre.accuracy,
        "centre_loss_fast": centre_fast.loss,
        "line": {"at": line_at, "loss": [p.loss for p in line], "accuracy": [p.accuracy for p in line]},
        "grid": {
            "at": grid_at,
            "loss": [[p.loss for p in plane[r * n : (r + 1) * n]] for r in range(n)],
            "accuracy": [[p.accuracy for p in plane[r * n : (r + 1) * n]] for r in range(n)],
        },
        "hessian": {
            "lambda_max": hessian.lambda_max,
            "lambda_min": hessian.lambda_min,
            "ratio": hessian.ratio,
            "residual_max": hessian.residual_max,
            "residual_min": hessian.residual_min,
            "steps": hessian.steps,
            "history": hessian.history,
        },
        "hessian_line": [_extremes(a, h) for a, h in zip(hessian_at, along, strict=True)],
        "phase_times_s": times,
        "wall_time_s": time.perf_counter() - started,
    }


def run(
    opts: Options,
    nets: tuple[str, ...],
    dataset: str | None,
    images: int = DEFAULT_IMAGES,
    grid: int = DEFAULT_GRID,
    span: float = DEFAULT_SPAN,
    hessian_steps: int = DEFAULT_HESSIAN_STEPS,
    hessian_points: int = DEFAULT_HESSIAN_POINTS,
    seed: int = 0,
) -> dict[str, Any]:
    """Scan every net's loss surface and estimate its Hessian's extreme eigenvalues; write and return
    the record."""
    settings = {
        "images": images,
        "grid": grid,
        "line": 2 * grid - 1,
        "span": span,
        "hessian_steps": hessian_steps,
        "hessian_points": hessian_points,
        "seed": seed,
    }
    return studies.run(NAME, opts, nets, dataset, settings, lambda n, b: _measure(n, b, settings))


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.grid < 3:
        raise UserError(f"--grid must be at least 3 points per side, got {args.grid}")
    return {
        "images": args.images,
        "grid": args.grid,
        "span": args.span,
        "hessian_steps": args.hessian_steps,
        "hessian_points": args.hessian_points,
    }


EXPERIMENT = Experiment(
    name=NAME,
    order=80,
    summary="filter-normalised 1-D and 2-D loss surfaces of trained nets and their Hessian's "
    "|lambda_min/lambda_max| (Li et al. 2018)",
    run=run,
    section=section,
    trains=False,
    args=(
        arg(
            "--images",
            "training images the loss is measured on (default: %(default)s)",
            type=positive_int,
            default=DEFAULT_IMAGES,
        ),
        arg(
            "--grid",
            "points per side of the 2-D grid, at least 3; the 1-D line has 2N-1 (default: %(default)s)",
            type=positive_int,
            default=DEFAULT_GRID,
        ),
        arg(
            "--span",
            "the scans cover [-S, S] in filter-normalised units (default: %(default)s)",
            type=positive_float,
            default=DEFAULT_SPAN,
        ),
        arg(
            "--hessian-steps",
            "Lanczos steps (Hessian-vector products) for the Hessian's extremes (default: %(default)s)",
            type=positive_int,
            default=DEFAULT_HESSIAN_STEPS,
        ),
        arg(
            "--hessian-points",
            "the Hessian's extremes also at K evenly spaced points of the 1-D line over [-S, S], as "
            "Li et al. map them off the trained weights; K odd includes the centre, 1 measures the "
            "centre only (default: %(default)s)",
            type=positive_int,
            default=DEFAULT_HESSIAN_POINTS,
        ),
    ),
    kwargs=_kwargs,
    cost="per net, GRID^2 + 2 GRID passes over IMAGES training images (bf16 where native) and "
    "HESSIAN_STEPS Hessian-vector products (fp32, double backpropagation) at the trained weights, "
    "then a Lanczos run of HESSIAN_STEPS more at each point of the line off the centre (K-1 runs for "
    "an odd --hessian-points K, K for an even one, none for 1); times measured on one machine are in "
    "docs/studies.md of the resnetlab repository",
)
