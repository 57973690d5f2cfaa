"""The lesion study's report section: tables, figures, the findings of Veit et al. beside ours and
the verdicts (:mod:`~resnetlab.experiments.lesion_verdicts`), from the record alone."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnetlab.experiments import studies
from resnetlab.experiments.lesion_verdicts import (
    CHANCE_SHARE,
    MIN_FALL,
    SMOOTH_SHARE,
    TWIN_RATIO,
    summary,
    verdicts,
)
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table
from resnetlab.reporting.text import beside_paper, pct, per_net, pts

CLAIM = (
    "Veit, Wilber & Belongie (2016): deleting a single residual block from a trained CIFAR-10 "
    "ResNet-110 at test time barely changes its error, except for the blocks that change the shape "
    "(downsampling); deleting a single layer of a plain net (their VGG) sends it to chance; and the "
    "error grows smoothly with the number k of residual blocks deleted. Residual nets behave like "
    "ensembles of many shallower paths, none of which is indispensable."
)
PAPER = {  # Veit et al. 2016, Sec. 4 (Figs. 3 and 5), in words: the findings ours are set beside
    "single": "ResNet-110 (54 blocks), CIFAR-10: the error stays close to the intact net's for every "
    "block but the downsampling ones",
    "plain": "VGG on CIFAR-10: removing any single layer drops it to chance (about 90% error)",
    "down": "deleting a downsampling block hurts clearly more than deleting any other",
    "k": "error grows smoothly as k = 1 .. 20 random blocks of the 54 are deleted",
}


def _spread(errors: list[float]) -> str:
    return f"{pct(statistics.fmean(errors))} ({pct(min(errors))} .. {pct(max(errors))})"


def _by_depth(nets: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for n in sorted(nets, key=lambda n: (len(n["blocks"]), n["residual"])):
        groups.setdefault(len(n["blocks"]), []).append(n)
    return groups


def _tables(nets: list[dict[str, Any]], record: dict[str, Any]) -> list[Table]:
    rows = []
    for n in nets:
        s = summary(n)
        fp32 = "" if n["intact_error_fp32"] == n["intact_error"] else f" (fp32 {pct(n['intact_error_fp32'])})"
        rows.append(
            [
                n["label"],
                pct(n["intact_error"]) + fp32,
                f"{pct(s['keep_mean'])} ({pct(s['keep_min'])} .. {pct(s['keep_max'])})",
                pct(s["down_mean"]) if n["residual"] else f"not deletable ({s['not_deletable']})",
                "n/a" if s["to_chance"] is None else f"{100 * s['to_chance']:.0f}%",
                pct(s["curve"][-1]),
                f"{n['wall_time_s']:.0f} s",
            ]
        )
    images = {n["images"] for n in nets}
    out = [
        Table(
            "Test error intact and with blocks deleted",
            [
                "net",
                "intact",
                "one shape-keeping block deleted: mean (min .. max)",
                "one downsampling block deleted",
                "way to chance",
                "every shape-keeping block deleted",
                "time",
            ],
            rows,
            f"{', '.join(str(i) for i in sorted(images))} test images per evaluation, the same for every "
            f"deletion; errors in {record['precision']}"
            + (" (the intact net again in fp32 in brackets)" if record["precision"] != "fp32" else "")
            + ". Way to chance: (mean error with one shape-keeping block deleted - intact) / "
            "(chance - intact).",
        )
    ]
    for count, group in _by_depth(nets).items():
        head = ["block", "module", "shape"] + [n["label"] for n in group]
        rows = []
        for i in range(count):
            b0 = group[0]["blocks"][i]
            cells = [
                pct(n["blocks"][i]["error"]) if n["blocks"][i]["deletable"] else "not deletable"
                for n in group
            ]
            rows.append([str(b0["index"]), b0["name"], "changes" if b0["shape_changes"] else "keeps", *cells])
        rows.append(["none", "", "", *[pct(n["intact_error"]) for n in group]])
        out.append(Table(f"Test error with one block deleted ({count}-block nets)", head, rows))
        ks = [c["k"] for c in group[0]["k_curve"]]
        rows = [
            [str(k), str(len(group[0]["k_curve"][j]["errors"]))]
            + [_spread(n["k_curve"][j]["errors"]) for n in group]
            for j, k in enumerate(ks)
        ]
        out.append(
            Table(
                f"Test error with k shape-keeping blocks deleted ({count}-block nets): mean (min .. max)",
                ["k", "sets", *[n["label"] for n in group]],
                rows,
                f"k = 1: every single block; k >= 2: up to {record['draws']} distinct random sets, seed "
                f"{record['seed']}, the same sets for every net of this depth.",
            )
        )
    out.append(_paper_table(nets))
    out.append(studies.origins(nets))
    return out


def _paper_table(nets: list[dict[str, Any]]) -> Table:
    def ours(residual: bool, fmt: Callable[[dict[str, Any]], str]) -> str:
        return per_net(
            nets, lambda n: n["residual"] == residual, lambda n: f"{n['label']}: {fmt(summary(n))}"
        )

    def curve(s: dict[str, Any]) -> str:
        return f"{pct(s['curve'][0])} -> {pct(s['curve'][-1])} over k = 0..{len(s['curve']) - 1}"

    rises = ours(True, lambda s: f"{pts(s['rise'])} on average" if s["rise"] is not None else "n/a")
    rows = [
        ["one block deleted, ResNet", PAPER["single"], rises],
        [
            "one block deleted, plain net",
            PAPER["plain"],
            ours(False, lambda s: f"{pct(s['keep_mean'])} on average"),
        ],
        [
            "downsampling blocks",
            PAPER["down"],
            ours(True, lambda s: f"{pct(s['down_mean'])} vs {pct(s['keep_mean'])}"),
        ],
        ["k blocks deleted", PAPER["k"], ours(True, curve)],
    ]
    return beside_paper("Veit et al. (2016) beside ours", "Veit et al.", rows)


PANELS = (("plain nets: a deleted block becomes the identity", False), ("ResNets: the shortcut stays", True))


def _block_panels(nets: list[dict[str, Any]]) -> list[tuple[str, dict[str, figures.LesionSeries]]]:
    return [
        (
            title,
            {
                n["label"]: figures.LesionSeries(
                    [b["error"] for b in n["blocks"]],
                    [b["shape_changes"] for b in n["blocks"]],
                    n["intact_error"],
                )
                for n in nets
                if n["residual"] == residual
            },
        )
        for title, residual in PANELS
    ]


def _k_panels(nets: list[dict[str, Any]]) -> list[tuple[str, dict[str, list[tuple[int, list[float]]]]]]:
    """Per panel, each net's [(k, errors of its draws)], k = 0 the intact net."""
    return [
        (
            title,
            {
                n["label"]: [(0, [n["intact_error"]])] + [(c["k"], c["errors"]) for c in n["k_curve"]]
                for n in nets
                if n["residual"] == residual
            },
        )
        for title, residual in PANELS
    ]


def section(out: Path, record: dict[str, Any]) -> Section:
    """The lesion figures, tables and verdicts, from the record alone."""
    nets = record["nets"]
    ordered = sorted(nets, key=lambda n: (n["depth"], n["residual"]))

    blocks_fig = figures.lesion_blocks(
        _block_panels(ordered),
        out / "figures" / "lesion-blocks.png",
        "Test error with one block deleted (squares: blocks that change the shape; dotted: intact)",
    )
    k_fig = figures.lesion_k(
        _k_panels(ordered),
        out / "figures" / "lesion-k.png",
        "Test error with k random shape-keeping blocks deleted (mean over draws, band: min .. max)",
    )
    limit = record["eval_limit"]
    budget = (
        f"no nets trained: {len(nets)} trained nets, {'all' if limit is None else limit} test images per "
        f"evaluation, {record['draws']} draws per k, seed {record['seed']}, batch {record['batch_size']}"
    )
    return Section(
        title="Lesion study: deleting blocks of trained nets (Veit et al. 2016)",
        claim=CLAIM,
        meta=studies.study_meta(record, budget),
        tables=_tables(ordered, record),
        verdicts=verdicts(nets),
        figures=[
            Figure(blocks_fig, "Error against the deleted block's index: plain nets left, ResNets right."),
            Figure(k_fig, "Error against the number k of blocks deleted: plain nets left, ResNets right."),
        ],
        notes=[
            "A deleted residual block keeps its shortcut: its output is relu(shortcut(x)), option A's "
            "subsampled, zero-padded x for the downsampling blocks. A deleted plain block becomes the "
            "identity; a plain block that changes the shape cannot be deleted.",
            "BN runs in eval mode (running statistics) throughout; nothing is retrained or recalibrated.",
            f"Thresholds: a ResNet's mean rise at most {TWIN_RATIO:g}x its plain twin's; a plain net at "
            f"least {100 * CHANCE_SHARE:.0f}% of the way to chance; smooth in k: no step over "
            f"{100 * SMOOTH_SHARE:.0f}% of the whole rise and no fall beyond two standard errors of the "
            f"draws (at least {100 * MIN_FALL:.0f} point). Chosen before any net was measured, bar the "
            "fall's noise allowance (a flat 1 point until a first probe showed draws 10 points apart).",
            "Veit et al. measured a 110-layer ResNet (54 blocks): in a 20-layer net (9 blocks) each block "
            "carries a larger share of the work, so larger effects are expected there; the comparison "
            "that carries over is the ResNet against its plain twin, and the trend with depth.",
        ],
    )
