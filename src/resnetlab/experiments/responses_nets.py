"""Layer responses (Fig. 7) of fully trained nets: ``reproduce responses --nets REF,REF,...``.

Nothing is trained. Each weights reference (anything :func:`resnetlab.weights.load_weights` takes)
is measured on the test split of the dataset with its own preprocessing (normaliser, classes, input
size from the weights), and the same forward passes give its top-1 error, so the report shows the
nets really are trained. The verdicts compare nets trained alike (same source and iteration count):
the ResNet against the plain net of the same depth, and every deeper ResNet against every shallower
one. Fully trained nets get no short-budget leniency: each claim is reproduced or not.

The nets go the way of every study of trained nets (:func:`resnetlab.experiments.studies.run`):
the forward passes in ``--precision`` (bf16 autocast where native by default), and each net's
measurement kept in the output folder and reused by a rerun with the same net and settings.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

from resnetlab.analysis.responses import measure_responses
from resnetlab.errors import UserError
from resnetlab.experiments import studies
from resnetlab.experiments.options import Options
from resnetlab.experiments.responses_claim import CLAIM, smaller
from resnetlab.experiments.studies import Bench
from resnetlab.experiments.trained_nets import TrainedNet, prepare, test_batches
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, Verdict

NAME = "responses"


def _post_activation(net: TrainedNet) -> None:
    if net.model.config["preact"]:
        raise UserError(
            f"{net.info['ref']}: layer responses (Fig. 7) are defined for post-activation nets, not preact"
        )


def _measure(net: TrainedNet, bench: Bench, test_images: int | None) -> dict[str, Any]:
    started = time.perf_counter()
    model = prepare(net, bench.device, bench.mode)
    opts = bench.opts
    batches = test_batches(net, bench.dataset, opts.data_dir, opts.batch_size, bench.device, bench.mode)
    bench.say(f"== {net.info['label']}: {net.info['ref']}")
    bf16 = bench.mode.precision == "bf16"
    measured = measure_responses(model, batches, bench.device, limit=test_images, autocast=bf16)
    return net.info | {
        "dataset": bench.dataset or net.info["trained_on"],
        "images": measured.images,
        "top1_error": measured.top1_error,
        "layers": [r.name for r in measured.responses],
        "stds": [r.std for r in measured.responses],
        "wall_time_s": time.perf_counter() - started,
    }


def run(opts: Options, refs: tuple[str, ...], dataset: str | None, test_images: int | None) -> dict[str, Any]:
    """Measure every net's responses and test error (or reuse what ``opts.out`` keeps of them);
    write and return the record."""
    settings = {"test_images": test_images}
    return studies.run(
        NAME, opts, refs, dataset, settings, lambda n, b: _measure(n, b, test_images), _post_activation
    )


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
    images = record["test_images"] or "all"
    budget = f"no nets trained: {len(nets)} trained nets measured, batch {record['batch_size']}"
    return Section(
        title="Layer responses (Fig. 7) of trained nets",
        claim=CLAIM,
        meta=studies.study_meta(record, budget),
        tables=[
            Table(
                "Std of 3x3 layer responses and top-1 error on the test set",
                ["net", "3x3 layers", "test error", "mean std", "smallest", "largest"],
                rows,
                f"Measured on {images} test images per net in one pass (nets in eval mode, "
                f"{record['precision']}), each net with its own preprocessing; the error is from the "
                "same forward passes.",
            ),
            studies.origins(nets),
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
