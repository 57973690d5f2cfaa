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
  Hessian-vector products, and Li et al.'s non-convexity measure |lambda_min / lambda_max|.

Verdicts: at CLAIM_DEPTH (56) layers and deeper the ResNet has the smaller ratio than its plain twin
(Li et al.'s claim); shallower pairs are reported, not judged (Li et al. find the 20-layer plain net
still near-convex); and among plain nets trained alike the deeper one has the larger ratio.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from resnetlab.analysis.landscape import (
    evaluate_loss,
    filter_normalized_direction,
    hessian_extremes,
    scan,
)
from resnetlab.data.loader import seeded_generator
from resnetlab.engine.distributed import select_device
from resnetlab.engine.precision import choose_mode
from resnetlab.errors import UserError
from resnetlab.experiments import net_measurements, records, trained_nets
from resnetlab.experiments.options import Options
from resnetlab.experiments.trained_nets import TrainedNet
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, Verdict

NAME = "landscape"
# Sized for 2 CPU cores (measured on the 20-layer pair, AVX512-BF16): 484 bf16 passes over 512 images
# and 30 Hessian-vector products took 6.5 min for plain-20. lambda_min needs the 30 steps: on
# ResNet-20 and plain-20 it is within 0.6% of its 40-step value by step 30, 10% short at step 20.
DEFAULT_IMAGES = 512
DEFAULT_GRID = 21
DEFAULT_SPAN = 1.0
DEFAULT_HESSIAN_STEPS = 30
CLAIM_DEPTH = 56

CLAIM = (
    "Li, Xu, Taylor, Studer & Goldstein (2018): on filter-normalised 2-D slices around the trained "
    "weights, ResNet-56 looks smooth and nearly convex while the same net without shortcuts is "
    "chaotic; without shortcuts the chaos grows with depth (20 -> 56 -> 110), while at 20 layers both "
    "look benign. The Hessian's |lambda_min / lambda_max| is near zero where the surface looks convex "
    "and large where it does not."
)
PAPER = {  # Li et al. 2018, Sec. 5 and 6 (Figs. 5 and 7), in words
    "56": "ResNet-56: smooth, nearly convex around the minimum; ResNet-56 without shortcuts: chaotic, "
    "sharply non-convex",
    "20": "at 20 layers the nets with and without shortcuts both look fairly convex",
    "depth": "without shortcuts the surface turns from convex to chaotic as depth grows 20 -> 56 -> 110",
    # (no "|" in table cells: Markdown reads it as a column break)
    "hessian": "the ratio abs(lambda_min/lambda_max) is near zero (convex) around the minima that look "
    "convex, large over much of the chaotic ones",
}


def coordinates(points: int, span: float) -> list[float]:
    """``points`` evenly spaced steps from -span to span (0 among them when ``points`` is odd)."""
    if points < 2:
        raise UserError(f"a scan needs at least 2 points, got {points}")
    return [-span + 2 * span * i / (points - 1) for i in range(points)]


def _measure(net: TrainedNet, opts: Options, settings: dict[str, Any]) -> dict[str, Any]:
    device = select_device(opts.device)
    mode = choose_mode(device, opts.precision)
    started = time.perf_counter()
    model = trained_nets.prepare(net, device, mode)
    batches = trained_nets.training_subset(
        net, settings["dataset"], opts.data_dir, settings["images"], opts.batch_size, device, mode
    )
    gen = seeded_generator(settings["seed"])
    directions = [filter_normalized_direction(model, gen) for _ in range(2)]
    bf16 = mode.precision == "bf16"
    say = (lambda text: None) if opts.quiet else (lambda text: print(text, flush=True))
    say(f"== {net.info['label']}: {net.info['ref']}")
    times = {}

    def timed(what: str, fn):
        t = time.perf_counter()
        value = fn()
        times[what] = time.perf_counter() - t
        say(f"   {what}: {times[what]:.0f} s")
        return value

    centre = timed("centre", lambda: evaluate_loss(model, batches))  # fp32: the reference
    centre_fast = evaluate_loss(model, batches, autocast=True) if bf16 else centre
    line_at = coordinates(settings["line"], settings["span"])
    grid_at = coordinates(settings["grid"], settings["span"])
    line = timed("line", lambda: scan(model, directions[:1], [(a,) for a in line_at], batches, autocast=bf16))
    points = [(x, y) for y in grid_at for x in grid_at]

    def progress(i: int) -> None:  # a line per tenth of the grid: it is most of the time
        if (i + 1) % max(1, len(points) // 10) == 0:
            say(f"   grid {i + 1}/{len(points)} points")

    plane = timed("grid", lambda: scan(model, directions, points, batches, autocast=bf16, progress=progress))
    # Double backpropagation runs 1.6x faster in the contiguous format than channels_last (2 CPU cores,
    # ResNet-20, measured), and it stays fp32 whatever the scans used.
    model = model.to(memory_format=torch.contiguous_format)
    flat = [(x.contiguous(), y) for x, y in batches]
    gen = seeded_generator(settings["seed"], 1)
    hessian = timed("hessian", lambda: hessian_extremes(model, flat, settings["hessian_steps"], gen))
    n = len(grid_at)
    return net.info | {
        "dataset": settings["dataset"] or net.info["trained_on"],
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
    seed: int = 0,
) -> dict[str, Any]:
    """Scan every net's loss surface and estimate its Hessian's extreme eigenvalues; write and return
    the record."""
    clock = trained_nets.Clock()
    loaded = trained_nets.load_nets(nets)
    settings = {
        "dataset": dataset,
        "images": images,
        "grid": grid,
        "line": 2 * grid - 1,
        "span": span,
        "hessian_steps": hessian_steps,
        "seed": seed,
    }
    device = select_device(opts.device)
    mode = choose_mode(device, opts.precision)
    key = settings | {"batch_size": opts.batch_size, "device": device.type}
    key |= {"precision": mode.precision, "memory_format": mode.memory_format}
    measured = net_measurements.measure_each(
        opts.out, NAME, loaded, key, lambda n: _measure(n, opts, settings), opts.quiet
    )
    record = trained_nets.base_record(
        NAME,
        device,
        mode,
        batch_size=opts.batch_size,
        **settings,
        nets=measured,
    )
    record |= clock.record()
    records.write_record(opts.out, record)
    return record


# ---- what the numbers say -----------------------------------------------------------------------


def _ratio(net: dict[str, Any]) -> float:
    return net["hessian"]["ratio"]


def _said(holds: bool) -> str:
    return "reproduced" if holds else "not reproduced"


def verdicts(nets: list[dict[str, Any]]) -> list[Verdict]:
    """Twins at CLAIM_DEPTH layers and deeper judged (shallower ones reported), and plain nets'
    ratio against depth."""
    out = []
    for plain, res in sorted(trained_nets.twins(nets), key=lambda pr: pr[0]["depth"]):
        r, p = _ratio(res), _ratio(plain)
        text = f"|lambda_min/lambda_max| {res['label']} {r:.4f} vs {plain['label']} {p:.4f}"
        if res["depth"] >= CLAIM_DEPTH:
            holds = r < p
            out.append(Verdict(f"{text}: the ResNet's surface more convex {_said(holds)}", holds))
        else:
            smaller = "smaller" if r < p else "not smaller"
            out.append(
                Verdict(
                    f"{text}: the ResNet's ratio is {smaller}; Li et al. claim the difference from "
                    f"{CLAIM_DEPTH} layers on (their 20-layer plain net still looks convex), so a "
                    f"{res['depth']}-layer pair cannot test it",
                    None,
                )
            )
    for shallow, deep in trained_nets.deeper(nets, residual=False):
        holds = _ratio(deep) > _ratio(shallow)
        out.append(
            Verdict(
                f"|lambda_min/lambda_max| {deep['label']} {_ratio(deep):.4f} vs {shallow['label']} "
                f"{_ratio(shallow):.4f}: less convex with depth without shortcuts {_said(holds)}",
                holds,
            )
        )
    if not out:
        out.append(
            Verdict(
                "no plain net and ResNet of one depth trained alike, nor two plain nets: nothing to compare",
                None,
            )
        )
    return out


# ---- the report ---------------------------------------------------------------------------------


def _rows(nets: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Panels of the contour figure: a row per depth, plain left and residual right."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for n in sorted(nets, key=lambda n: (n["depth"], n["residual"])):
        rows.setdefault(n["depth"], []).append(n)
    return list(rows.values())


def _tables(nets: list[dict[str, Any]], record: dict[str, Any]) -> list[Table]:
    rows = []
    for n in nets:
        h = n["hessian"]
        grid = [v for line in n["grid"]["loss"] for v in line]
        check = (
            "" if record["precision"] == "fp32" else f" ({record['precision']}: {n['centre_loss_fast']:.4f})"
        )
        rows.append(
            [
                n["label"],
                f"{n['centre_loss']:.4f}{check}",
                f"{100 * n['centre_accuracy']:.2f}%",
                f"{max(grid):.3g}",
                f"{h['lambda_max']:.4g} (± {h['residual_max']:.2g})",
                f"{h['lambda_min']:.4g} (± {h['residual_min']:.2g})",
                f"{h['ratio']:.4f}",
                ", ".join(f"{k} {v:.0f} s" for k, v in n["phase_times_s"].items()),
            ]
        )
    table = Table(
        "Training loss at the trained weights, the largest loss on the grid, and the Hessian's extremes",
        [
            "net",
            "loss at centre (fp32)",
            "training accuracy",
            "largest loss on grid",
            "lambda_max",
            "lambda_min",
            "abs(lambda_min/lambda_max)",
            "time",
        ],
        rows,
        f"On {record['images']} training images; Hessian of the mean loss over all parameters in fp32, "
        f"{record['hessian_steps']} Lanczos steps; ± is the Lanczos residual bound (an eigenvalue lies "
        "that close to the estimate; lambda_min errs towards zero when not converged).",
    )
    return [table, _paper_table(nets), trained_nets.origins(nets)]


def _paper_table(nets: list[dict[str, Any]]) -> Table:
    def ratios(pick) -> str:
        chosen = [n for n in nets if pick(n)]
        return "; ".join(f"{n['label']} {_ratio(n):.4f}" for n in chosen) or "no such net measured"

    rows = [
        ["56 layers, with and without shortcuts", PAPER["56"], ratios(lambda n: n["depth"] == 56)],
        ["20 layers", PAPER["20"], ratios(lambda n: n["depth"] == 20)],
        ["depth, without shortcuts", PAPER["depth"], ratios(lambda n: not n["residual"])],
        ["Hessian", PAPER["hessian"], ratios(lambda n: True)],
    ]
    return Table(
        "Li et al. (2018) beside ours (ours: abs(lambda_min/lambda_max))",
        ["finding", "Li et al.", "ours"],
        rows,
    )


def section(out: Path, record: dict[str, Any]) -> Section:
    """The landscape figures, tables and verdicts, from the record alone."""
    nets = record["nets"]
    ordered = [n for row in _rows(nets) for n in row]
    span = record["span"]
    contours = figures.landscape_contours(
        [[(n["label"], n["grid"]["loss"]) for n in row] for row in _rows(nets)],
        nets[0]["grid"]["at"],
        out / "figures" / "landscape-contours.png",
        f"Training loss on a filter-normalised 2-D slice, [-{span:g}, {span:g}]^2, same levels throughout",
    )
    lines = figures.landscape_lines(
        {n["label"]: (n["line"]["at"], n["line"]["loss"], n["line"]["accuracy"]) for n in ordered},
        out / "figures" / "landscape-1d.png",
        "Training loss and accuracy along one filter-normalised direction",
    )
    bars = figures.bars(
        [n["label"] for n in ordered],
        [_ratio(n) for n in ordered],
        out / "figures" / "landscape-hessian.png",
        "Non-convexity at the trained weights",
        "|lambda_min / lambda_max|",
    )
    budget = (
        f"no nets trained: {len(nets)} trained nets, {record['images']} training images, grid "
        f"{record['grid']}x{record['grid']} and a line of {record['line']} points over "
        f"[-{span:g}, {span:g}], "
        f"{record['hessian_steps']} Lanczos steps, seed {record['seed']}, batch {record['batch_size']}"
    )
    return Section(
        title="Loss landscapes and Hessian of trained nets (Li et al. 2018)",
        claim=CLAIM,
        meta=trained_nets.study_meta(record, budget),
        tables=_tables(ordered, record),
        verdicts=verdicts(nets),
        figures=[
            Figure(
                contours, "Loss contours around the trained weights (cross): plain nets left, ResNets right."
            ),
            Figure(
                lines, "1-D slices along direction 1: loss (left, log scale) and training accuracy (right)."
            ),
            Figure(
                bars, "|lambda_min/lambda_max| of the Hessian at the trained weights (smaller: more convex)."
            ),
        ],
        notes=[
            "Directions: Gaussian, each filter rescaled to the norm of the trained filter (conv output "
            "channels, fc rows); zero for BN weights and biases and the fc bias, as Li et al. do by default. "
            "Nets of the same shape get the same Gaussian draws (seed "
            f"{record['seed']}).",
            "BN runs in eval mode on its running statistics for every point; the scan checks that no "
            "running statistic changed.",
            f"Grid and line losses in {record['precision']} ({record['precision_reason']}); the "
            "loss at the centre and the Hessian in fp32.",
            "Li et al. scan the whole training set on a 51x51 grid; here a fixed subset and a coarser grid "
            "keep the cost within minutes on a CPU: the shapes compare, the loss values are of the subset.",
        ],
    )
