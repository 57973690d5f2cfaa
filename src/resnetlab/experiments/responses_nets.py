"""Layer responses (Fig. 7) of fully trained nets: ``reproduce responses --nets REF,REF,...``.

Nothing is trained. Each weights reference (anything :func:`resnetlab.weights.load_weights` takes)
is measured on the test split of the dataset with its own preprocessing (normaliser, classes, input
size from the weights), and the same forward passes give its top-1 error, so the report shows the
nets really are trained. The verdicts compare nets trained alike (same source and iteration count):
the ResNet against the plain net of the same depth, and every deeper ResNet against every shallower
one. Fully trained nets get no short-budget leniency: each claim is reproduced or not.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from resnetlab.analysis.responses import measure_responses
from resnetlab.engine.distributed import device_name, select_device
from resnetlab.engine.rundir import environment
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.evaluation import checkpoint_batches
from resnetlab.experiments import records
from resnetlab.experiments.options import Options
from resnetlab.experiments.responses_claim import CLAIM, smaller
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, Verdict
from resnetlab.weights import load_weights

OURS = "resnetlab"  # the source of weights trained by this library (no provenance in the file)


def depth_of(config: dict[str, Any]) -> int:
    """Weighted layers of a net as the paper counts them: stem conv, the blocks' convs, the fc."""
    per_block = 3 if config.get("block") == "bottleneck" else 2
    return 2 + per_block * sum(config["layers"])


def describe(ref: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the record says about one net before measuring it: reference, kind and provenance."""
    config = ckpt["model_config"]
    residual = bool(config.get("residual", True))
    provenance = ckpt.get("provenance") or {}
    source = provenance.get("converted_from") or provenance.get("publisher") or OURS
    depth = depth_of(config)
    label = f"{'ResNet' if residual else 'plain'}-{depth}" + ("" if source == OURS else f" ({source})")
    return {
        "ref": ref,
        "origin": ckpt["origin"],
        "label": label,
        "model_name": ckpt["model_name"],
        "depth": depth,
        "residual": residual,
        "source": source,
        "iterations": ckpt.get("iteration"),
        "trained_on": ckpt.get("config", {}).get("dataset"),
        "provenance": provenance or None,
        "normalization": ckpt["normalizer"]["mode"],
    }


def _measure(ref: str, opts: Options, dataset: str | None, test_images: int | None) -> dict[str, Any]:
    ckpt = load_weights(ref)
    net = describe(ref, ckpt)
    model = model_from_checkpoint(ckpt)
    if model.config["preact"]:
        raise UserError(f"{ref}: layer responses (Fig. 7) are defined for post-activation nets, not preact")
    device = select_device(opts.device)
    split, batches = checkpoint_batches(
        ckpt, dataset=dataset, data_dir=opts.data_dir, batch_size=opts.batch_size, device=device
    )
    if split != "test":
        raise UserError(f"{ref}: the dataset has no test split to measure on (only {split})")
    if not opts.quiet:
        print(f"== {net['label']}: {ref}", flush=True)
    measured = measure_responses(model.to(device), batches, device, limit=test_images)
    return net | {
        "dataset": dataset or ckpt.get("config", {})["dataset"],
        "images": measured.images,
        "top1_error": measured.top1_error,
        "layers": [r.name for r in measured.responses],
        "stds": [r.std for r in measured.responses],
    }


def unique_labels(nets: list[dict[str, Any]]) -> None:
    """Nets that would share a label get their iteration counts added where those tell them
    apart, else a number."""
    same: dict[str, list[dict[str, Any]]] = {}
    for n in nets:
        same.setdefault(n["label"], []).append(n)
    for label, group in same.items():
        if len(group) < 2:
            continue
        counts = [n["iterations"] for n in group]
        by_count = None not in counts and len(set(counts)) == len(counts)
        for i, n in enumerate(group, 1):
            n["label"] = f"{label} ({n['iterations']:,} it)" if by_count else f"{label} #{i}"


def run(opts: Options, refs: tuple[str, ...], dataset: str | None, test_images: int | None) -> dict[str, Any]:
    """Measure every net's responses and test error; write and return the record."""
    started = time.perf_counter()
    nets = [_measure(ref, opts, dataset, test_images) for ref in refs]
    unique_labels(nets)
    record = {
        "experiment": "responses",
        **environment(device_name(select_device(opts.device)), 1),
        "torch_threads": torch.get_num_threads(),
        "dataset": dataset,
        "batch_size": opts.batch_size,
        "test_images": test_images,
        "nets": nets,
        "wall_time_s": time.perf_counter() - started,
    }
    records.write_record(opts.out, record)
    return record


def verdicts(nets: list[dict[str, Any]]) -> list[Verdict]:
    """Within each group of nets trained alike (same source and iteration count): the ResNet below
    the plain net of its depth, and every deeper ResNet below every shallower one."""
    mean = {n["label"]: statistics.fmean(n["stds"]) for n in nets}
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for n in nets:
        groups.setdefault((n["source"], n["iterations"]), []).append(n)
    pairs = []  # (should respond less, should respond more, claim)
    for group in groups.values():
        group = sorted(group, key=lambda n: (n["depth"], n["residual"]))
        pairs += [
            (r, p, "smaller responses of the residual net")
            for p, r in itertools.product(group, group)
            if p["depth"] == r["depth"] and not p["residual"] and r["residual"]
        ]
        resnets = [n for n in group if n["residual"]]
        pairs += [
            (deep, shallow, "smaller responses of the deeper ResNet")
            for shallow, deep in itertools.combinations(resnets, 2)
            if shallow["depth"] < deep["depth"]
        ]
    # fully trained nets: no short-budget leniency, each claim holds or not
    out = [
        smaller((a["label"], mean[a["label"]]), (b["label"], mean[b["label"]]), claim, short=False)
        for a, b, claim in pairs
    ]
    if not out:
        out.append(
            Verdict(
                "no two nets trained alike to compare (give a plain net and a ResNet of the same depth, or "
                "ResNets of two depths, from the same source)",
                None,
            )
        )
    return out


def _trained(net: dict[str, Any]) -> str:
    iterations = f", {net['iterations']:,} iterations" if net["iterations"] else ""
    return f"{net['source']}{iterations}, on {net['trained_on'] or 'an unnamed dataset'}"


def _error(net: dict[str, Any]) -> str:
    return "n/a" if net["top1_error"] is None else f"{100 * net['top1_error']:.2f}%"


def section(out: Path, record: dict[str, Any]) -> Section:
    """Fig. 7, the table of responses and test errors, and the verdicts, from the record alone."""
    nets = record["nets"]
    datasets = sorted({n["dataset"] for n in nets})
    fig = figures.layer_responses(
        {n["label"]: n["stds"] for n in nets},
        out / "figures" / "responses-fig7.png",
        f"{', '.join(datasets)} test set: std of 3x3 layer responses of trained nets (Fig. 7)",
    )
    rows = [
        [
            n["label"],
            str(len(n["stds"])),
            _error(n),
            f"{statistics.fmean(n['stds']):.3f}",
            f"{min(n['stds']):.3f}",
            f"{max(n['stds']):.3f}",
        ]
        for n in nets
    ]
    origins = [[n["label"], f"`{n['ref']}`", _trained(n), n["normalization"]] for n in nets]
    images = record["test_images"] or "all"
    return Section(
        title="Layer responses (Fig. 7) of trained nets",
        claim=CLAIM,
        meta={
            "command": record["command"],
            "versions": f"resnetlab {record['resnetlab_version']}, torch {record['torch_version']}",
            "device": f"{record['device']} ({record['torch_threads']} threads)",
            "dataset": ", ".join(datasets),
            "budget": f"no nets trained: {len(nets)} trained nets measured, batch {record['batch_size']}",
            "wall time": f"{record['wall_time_s']:.0f} s for this command",
        },
        tables=[
            Table(
                "Std of 3x3 layer responses and top-1 error on the test set",
                ["net", "3x3 layers", "test error", "mean std", "smallest", "largest"],
                rows,
                f"Measured on {images} test images per net in one pass (nets in eval mode), each net "
                "with its own preprocessing; the error is from the same forward passes.",
            ),
            Table("Where the weights came from", ["net", "reference", "trained", "normalisation"], origins),
        ],
        verdicts=verdicts(nets),
        figures=[
            Figure(fig, "Top: std per 3x3 layer in forward order. Bottom: the same, sorted. Plain dashed.")
        ],
        notes=[
            "Layer 1 is the stem's 3x3 conv; then conv1 and conv2 of every basic block.",
            "Verdicts compare nets trained alike (same source and iteration count) by their mean std; "
            "a mean at most 95% of the other's counts as smaller.",
        ],
    )
