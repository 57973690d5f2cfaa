"""Layer responses (Fig. 7): residual functions respond less than the layers of plain nets.

Trains (or reuses, e.g. from ``reproduce degradation`` in the same ``--out``) plain and residual
nets of each depth, then measures the std of every 3x3 layer's output after BN on the test set.
With ``--nets`` it trains nothing and measures given trained nets instead (see
:mod:`resnetlab.experiments.responses_nets`); its record has ``nets`` where this one has ``responses``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from resnetlab.analysis.responses import layer_responses
from resnetlab.data.datasets import SPEC_HELP
from resnetlab.engine.distributed import select_device
from resnetlab.engine.precision import PRECISIONS
from resnetlab.experiments import degradation, finished_runs, records, responses_nets, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet, parse_depths
from resnetlab.experiments.declaration import Experiment, arg, positive_int, train_nothing
from resnetlab.experiments.options import Options
from resnetlab.experiments.responses_claim import CLAIM, smaller
from resnetlab.experiments.trained_nets import parse_refs
from resnetlab.reporting import figures
from resnetlab.reporting.report import PAPER_ITERATIONS, Figure, Section, Table, Verdict, budget_note
from resnetlab.weights import WEIGHTS_HELP

NAME = "responses"


def run(
    opts: Options,
    depths: tuple[int, ...] = (),
    test_images: int | None = None,
    nets: tuple[str, ...] = (),
    dataset: str | None = None,
) -> dict[str, Any]:
    """Train or reuse the nets of ``depths``, measure their responses on the test set, write the
    record; with ``nets`` (weights references) measure those instead, each on ``dataset`` (default:
    its own)."""
    if nets:
        return responses_nets.run(opts, nets, dataset, test_images)
    started = time.perf_counter()
    nets = degradation.nets_for(depths)
    iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
    runs = training.train_all(opts, nets, iterations)
    device = select_device(opts.device)
    measured = []
    for (net, seed), path in runs.items():
        model, ckpt = finished_runs.load_trained(path)
        batches = finished_runs.split_batches(opts, ckpt, "test", test_images)
        layers = layer_responses(model.to(device), batches, device)
        measured.append(
            {"depth": net.depth, "residual": net.residual, "seed": seed, "stds": [r.std for r in layers]}
        )
    record = records.base_record(NAME, opts, iterations, started, runs)
    record |= {"depths": sorted(depths), "test_images": test_images}
    record["responses"] = measured
    records.write_record(opts.out, record)
    return record


def mean_stds(record: dict[str, Any]) -> dict[CifarNet, list[float]]:
    """Each net's per-layer response std, averaged over seeds."""
    per_net: dict[CifarNet, list[list[float]]] = {}
    for m in record["responses"]:
        per_net.setdefault(CifarNet(m["depth"], m["residual"]), []).append(m["stds"])
    return {net: [statistics.fmean(v) for v in zip(*runs, strict=True)] for net, runs in per_net.items()}


def verdicts(stds: dict[CifarNet, list[float]], iterations: int) -> list[Verdict]:
    """ResNet below plain at every depth; the deeper ResNet below the shallower one."""
    short = iterations < PAPER_ITERATIONS / 10
    mean = {net: statistics.fmean(v) for net, v in stds.items()}
    depths = sorted({n.depth for n in stds})
    out = []
    for d in depths:
        p, r = CifarNet(d, False), CifarNet(d, True)
        if p in mean and r in mean:
            claim = "smaller responses of the residual net"
            out.append(smaller((r.label, mean[r]), (p.label, mean[p]), claim, short))
    lo, hi = CifarNet(depths[0], True), CifarNet(depths[-1], True)
    if lo != hi and lo in mean and hi in mean:
        claim = "smaller responses of the deeper ResNet"
        out.append(smaller((hi.label, mean[hi]), (lo.label, mean[lo]), claim, short))
    return out


def section(out: Path, record: dict[str, Any]) -> Section:
    """Fig. 7 and its verdicts from the stored measurements (of nets trained here, or of ``--nets``)."""
    if "nets" in record:
        return responses_nets.section(out, record)
    stds = mean_stds(record)
    order = sorted(stds, key=lambda n: (n.residual, n.depth))
    iterations = record["budget"]["iterations"]
    fig = figures.layer_responses(
        {n.label: stds[n] for n in order},
        out / "figures" / "responses-fig7.png",
        f"{record['dataset']} test set: std of 3x3 layer responses (Fig. 7 style), {iterations:,} iterations",
    )
    rows = [
        [
            n.label,
            str(len(stds[n])),
            f"{statistics.fmean(stds[n]):.3f}",
            f"{min(stds[n]):.3f}",
            f"{max(stds[n]):.3f}",
        ]
        for n in order
    ]
    images = record["test_images"] or "all"
    return Section(
        title="Layer responses (Fig. 7)",
        claim=CLAIM,
        meta=records.section_meta(record),
        budget_note=budget_note(iterations),
        tables=[
            Table(
                "Std of 3x3 layer responses on the test set",
                ["net", "3x3 layers", "mean std", "smallest", "largest"],
                rows,
                f"Measured on {images} test images, nets in eval mode; mean over seeds per layer.",
            )
        ],
        verdicts=verdicts(stds, iterations),
        figures=[
            Figure(fig, "Top: std per 3x3 layer in forward order. Bottom: the same, sorted. Plain dashed.")
        ],
        notes=["Layer 1 is the stem's 3x3 conv; then conv1 and conv2 of every basic block."],
    )


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.nets is None:
        return {"depths": parse_depths(args.depths), "test_images": args.test_images}
    train_nothing(args, "--nets measures trained nets")
    return {"nets": parse_refs(args.nets), "dataset": args.dataset, "test_images": args.test_images}


EXPERIMENT = Experiment(
    name=NAME,
    order=20,
    summary="std of every 3x3 layer's response of trained plain and residual nets (Fig. 7)",
    run=run,
    section=section,
    args=(
        arg(
            "--dataset", f"{SPEC_HELP} (default: {degradation.DEFAULTS.dataset}; with --nets, each net's own)"
        ),
        arg(
            "--out",
            "output folder (default: %(default)s); with --nets, each net's measurement is kept there and "
            "a rerun with the same net and settings reuses it",
            type=Path,
            default=Path("runs") / NAME,
        ),
        arg(
            "--precision",
            "auto (default): bf16 autocast where the device computes bf16 natively, fp32 elsewhere; "
            "with --nets, of the measuring passes",
            choices=PRECISIONS,
            default="auto",
        ),
        arg(
            "--depths",
            "CIFAR depths 6n+2 to train (default: %(default)s)",
            default=degradation.DEPTHS_TEXT,
            exclusive="nets",
        ),
        arg(
            "--nets",
            f"measure these trained nets instead of training any; each REF is {WEIGHTS_HELP}",
            metavar="REF,REF,...",
            exclusive="nets",
        ),
        arg("--test-images", "test images to measure on (default: all)", type=positive_int),
    ),
    kwargs=_kwargs,
)
