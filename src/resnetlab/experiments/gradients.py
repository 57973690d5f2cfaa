"""Gradient norms per layer, at initialisation and after training: do plain nets' gradients vanish?

The study notes credit the identity shortcut with keeping gradients from vanishing. The paper
(Sec. 4.1) argues the opposite for its plain nets: with BN "the backward propagated gradients exhibit
healthy norms", so degradation is not a vanishing-gradient problem. We measure both nets.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from resnetlab.analysis.gradients import LayerGradient, early_late_ratio, gradient_norms
from resnetlab.engine.distributed import select_device
from resnetlab.experiments import degradation, finished_runs, records, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet, parse_depths
from resnetlab.experiments.declaration import Experiment, arg, positive_int
from resnetlab.experiments.options import Options
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, Verdict, budget_note

NAME = "gradients"
CLAIM = (
    "Plain nets trained with BN do not suffer from vanishing gradients: 'the backward propagated "
    "gradients exhibit healthy norms with BN' (Sec. 4.1), so their early layers get gradients of a size "
    "comparable to a residual net's. (The study notes' claim, that only the shortcut keeps them from "
    "vanishing, is the opposite.)"
)
VANISHING = 0.1  # plain early/late ratio below this fraction of the residual net's counts as vanishing


def run(opts: Options, depths: tuple[int, ...], batches: int = 4) -> dict[str, Any]:
    """Train or reuse the nets; measure gradient norms at initialisation and after training."""
    started = time.perf_counter()
    nets = degradation.nets_for(depths)
    iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
    runs = training.train_all(opts, nets, iterations)
    device = select_device(opts.device)
    measured = []
    for (net, seed), path in runs.items():
        trained, ckpt = finished_runs.load_trained(path)
        data = finished_runs.split_batches(opts, ckpt, "train", batches * opts.batch_size, opts.batch_size)
        torch.manual_seed(seed)  # the run's seed, as the engine seeds before building the net
        fresh = net.build(len(ckpt["classes"]))
        at_init = gradient_norms(fresh.to(device), data, device)
        after = gradient_norms(trained.to(device), data, device)
        measured.append(
            {
                "depth": net.depth,
                "residual": net.residual,
                "seed": seed,
                "layers": [[g.name, g.kind] for g in at_init],
                "init": [g.norm for g in at_init],
                "trained": [g.norm for g in after],
            }
        )
    record = records.base_record(NAME, opts, iterations, started, runs)
    record |= {"depths": sorted(depths), "batches": batches}
    record["gradients"] = measured
    records.write_record(opts.out, record)
    return record


def mean_norms(record: dict[str, Any], moment: str) -> dict[CifarNet, list[LayerGradient]]:
    """Per net, the layers' gradient norms at ``moment`` ("init" or "trained"), mean over seeds."""
    per_net: dict[CifarNet, list[dict[str, Any]]] = {}
    for m in record["gradients"]:
        per_net.setdefault(CifarNet(m["depth"], m["residual"]), []).append(m)
    means = {}
    for net, runs in per_net.items():
        norms = [statistics.fmean(v) for v in zip(*(r[moment] for r in runs), strict=True)]
        layers = runs[0]["layers"]
        means[net] = [
            LayerGradient(i + 1, n, k, g) for i, ((n, k), g) in enumerate(zip(layers, norms, strict=True))
        ]
    return means


def verdicts(record: dict[str, Any]) -> list[Verdict]:
    """Per depth and moment: is the plain net's early/late gradient ratio within 10x of the ResNet's?"""
    out = []
    iterations = record["budget"]["iterations"]
    for moment, when in (("init", "at initialisation"), ("trained", f"after {iterations:,} iterations")):
        norms = mean_norms(record, moment)
        for d in sorted({n.depth for n in norms}):
            p, r = CifarNet(d, False), CifarNet(d, True)
            if p not in norms or r not in norms:
                continue
            pr, rr = early_late_ratio(norms[p]), early_late_ratio(norms[r])
            relative = pr / rr if rr > 0 else float("inf")
            text = (
                f"{when}: early/late-layer gradient ratio {p.label} {pr:.3g}, {r.label} {rr:.3g} "
                f"(plain/residual {relative:.3g}): early-layer gradients "
            )
            if relative < VANISHING:
                out.append(Verdict(text + "vanish in the plain net relative to the residual net", False))
            else:
                out.append(
                    Verdict(text + "do not vanish in the plain net relative to the residual net", True)
                )
    return out


def section(out: Path, record: dict[str, Any]) -> Section:
    """The gradient-norm figure, a table of ratios and the verdicts."""
    iterations = record["budget"]["iterations"]
    panels = []
    rows = []
    moments = (("init", "at initialisation"), ("trained", f"after {iterations:,} iterations"))
    for moment, title in moments:
        norms = mean_norms(record, moment)
        order = sorted(norms, key=lambda n: (n.depth, n.residual))
        panels.append((title, {n.label: [g.norm for g in norms[n]] for n in order}))
        for n in order:
            convs = [g.norm for g in norms[n] if g.kind == "conv"]
            rows.append(
                [n.label, title, f"{convs[0]:.3g}", f"{convs[-1]:.3g}", f"{early_late_ratio(norms[n]):.3g}"]
            )
    fig = figures.gradient_norms(
        panels,
        out / "figures" / "gradients.png",
        f"{record['dataset']}: weight-gradient norm per layer (mean of {record['batches']} batches)",
    )
    return Section(
        title="Gradient norms per layer (Sec. 4.1)",
        claim=CLAIM,
        meta=records.section_meta(record),
        budget_note=budget_note(iterations),
        tables=[
            Table(
                "Weight-gradient L2 norms",
                ["net", "when", "first conv", "last conv", "early/late ratio"],
                rows,
                "Early/late ratio: median norm of the first quarter of conv layers over the last quarter's. "
                f"Vanishing means the plain net's ratio is below {VANISHING:g}x the residual net's.",
            )
        ],
        verdicts=verdicts(record),
        figures=[Figure(fig, "Gradient norm of every conv and fc weight, log scale; plain dashed.")],
        notes=[
            "Norms on the same unaugmented training batches for every net, nets in training mode (batch BN).",
            "The net at initialisation is rebuilt from the run's seed: the weights the run started from.",
        ],
    )


EXPERIMENT = Experiment(
    name=NAME,
    order=30,
    summary="per-layer weight-gradient norms at initialisation and after training, plain vs residual",
    run=run,
    section=section,
    args=(
        arg("--depths", "CIFAR depths 6n+2 (default: %(default)s)", default=degradation.DEPTHS_TEXT),
        arg("--batches", "batches to average each norm over (default: 4)", type=positive_int, default=4),
    ),
    kwargs=lambda args: {"depths": parse_depths(args.depths), "batches": args.batches},
)
