"""Lesion study of given trained nets (Veit, Wilber & Belongie, NeurIPS 2016):
``reproduce lesion --nets REF,REF,...``.

Nothing is trained. Each net is evaluated on the test split with its own preprocessing, BN in eval
mode: intact, with every single block deleted in turn (a residual block keeps its shortcut, a plain
block becomes the identity where the shapes allow, see :mod:`resnetlab.analysis.lesion`), and with
k randomly chosen blocks deleted for k = 2 .. n, ``draws`` distinct draws per k (seeded). The random
draws choose among the n blocks that keep the shape, the blocks both a ResNet and its plain twin can
lose, so twins lose the very same blocks; k = 1 is the mean over all n single deletions.

The verdicts judge each ResNet against its plain twin (same depth, trained alike), not against a
fixed number: Veit et al. measured 110 layers, where a block carries less than in a 20-layer net.
Thresholds (all on errors as fractions; "rise" = error with the block deleted minus intact error):

- TWIN_RATIO: the ResNet's mean rise over single shape-keeping deletions is at most this fraction
  of its plain twin's ("barely changes" vs "breaks");
- CHANCE_SHARE: a plain net's mean single-deletion error has covered at least this share of the
  way from its intact error to chance (Veit et al.'s VGG went all the way);
- downsampling blocks: a ResNet's mean error without one of them exceeds its mean error without a
  shape-keeping block;
- SMOOTH_SHARE: the ResNet's mean error against k (k = 0 intact .. n) never rises by more than this
  share of the whole rise in one step, and never falls by more than the draws' noise explains (two
  standard errors of the two means, at least MIN_FALL);
- depth: a deeper ResNet trained alike has the smaller mean rise.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from resnetlab.analysis.lesion import BlockSite, block_sites, lesion_errors
from resnetlab.data.loader import seeded_generator
from resnetlab.engine.distributed import select_device
from resnetlab.engine.precision import choose_mode
from resnetlab.experiments import net_measurements, records, trained_nets
from resnetlab.experiments.options import Options
from resnetlab.experiments.trained_nets import TrainedNet
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, Verdict

NAME = "lesion"
TWIN_RATIO = 0.25
CHANCE_SHARE = 0.5
SMOOTH_SHARE = 0.5
MIN_FALL = 0.01
DEFAULT_DRAWS = 5

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


def _measure(net: TrainedNet, opts: Options, dataset: str | None, draws: int, seed: int) -> dict[str, Any]:
    device = select_device(opts.device)
    mode = choose_mode(device, opts.precision)
    started = time.perf_counter()
    model = trained_nets.prepare(net, device, mode)
    batches = trained_nets.test_batches(net, dataset, opts.data_dir, opts.batch_size, device)
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format

    def stream():
        return ((x.contiguous(memory_format=fmt), y) for x, y in batches)

    sites = block_sites(model)
    singles = [s.index for s in sites if s.deletable]
    multi = deletion_sets(sites, draws, seed)
    sets = [(i,) for i in singles] + [s for k in sorted(multi) for s in multi[k]]
    if not opts.quiet:
        print(f"== {net.info['label']}: {net.info['ref']}, {len(sets) + 1} evaluations", flush=True)
    bf16 = mode.precision == "bf16"
    kw = {"device": device, "limit": opts.eval_limit}
    measured = lesion_errors(model, stream(), sets, autocast=bf16, **kw)
    # the accuracy check of bf16: the intact net once more in fp32, on the same images
    fp32 = lesion_errors(model, stream(), [], **kw).intact if bf16 else measured.intact
    single = dict(zip(singles, measured.deleted, strict=False))
    rest = iter(measured.deleted[len(singles) :])
    keep = [s.index for s in sites if not s.shape_changes]
    curve = [{"k": 1, "sets": [[i] for i in keep], "errors": [single[i] for i in keep]}]
    curve += [
        {"k": k, "sets": [list(s) for s in multi[k]], "errors": [next(rest) for _ in multi[k]]}
        for k in sorted(multi)
    ]
    return net.info | {
        "dataset": dataset or net.info["trained_on"],
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
    """Measure every net's lesion errors; write and return the record."""
    clock = trained_nets.Clock()
    loaded = trained_nets.load_nets(nets)
    device = select_device(opts.device)
    mode = choose_mode(device, opts.precision)
    settings = {"dataset": dataset, "eval_limit": opts.eval_limit, "batch_size": opts.batch_size}
    settings |= {
        "draws": draws,
        "seed": seed,
        "device": device.type,
        "precision": mode.precision,
        "memory_format": mode.memory_format,
    }
    measured = net_measurements.measure_each(
        opts.out, NAME, loaded, settings, lambda n: _measure(n, opts, dataset, draws, seed), opts.quiet
    )
    record = trained_nets.base_record(
        NAME,
        device,
        mode,
        dataset=dataset,
        batch_size=opts.batch_size,
        eval_limit=opts.eval_limit,
        draws=draws,
        seed=seed,
        nets=measured,
    )
    record |= clock.record()
    records.write_record(opts.out, record)
    return record


# ---- what the numbers say -----------------------------------------------------------------------


def summary(net: dict[str, Any]) -> dict[str, Any]:
    """Derived numbers of one net: mean/min/max single-deletion rise over shape-keeping blocks, the
    mean error without a downsampling block, the share of the way to chance, the k curve."""
    base = net["intact_error"]
    keep = [b["error"] for b in net["blocks"] if b["deletable"] and not b["shape_changes"]]
    down = [b["error"] for b in net["blocks"] if b["deletable"] and b["shape_changes"]]
    chance = 1 - 1 / net["classes"]
    curve = [base] + [statistics.fmean(c["errors"]) for c in net["k_curve"]]
    # standard error of each mean over its draws (0 for the intact net and a single set)
    spread = [0.0] + [
        statistics.stdev(c["errors"]) / math.sqrt(len(c["errors"])) if len(c["errors"]) > 1 else 0.0
        for c in net["k_curve"]
    ]
    steps = [b - a for a, b in itertools.pairwise(curve)]
    noise = [max(MIN_FALL, 2 * math.hypot(a, b)) for a, b in itertools.pairwise(spread)]
    total = curve[-1] - curve[0]
    return {
        "keep_mean": statistics.fmean(keep) if keep else None,
        "keep_min": min(keep, default=None),
        "keep_max": max(keep, default=None),
        "rise": statistics.fmean(keep) - base if keep else None,
        "down_mean": statistics.fmean(down) if down else None,
        "not_deletable": sum(not b["deletable"] for b in net["blocks"]),
        "to_chance": (statistics.fmean(keep) - base) / (chance - base) if keep and chance > base else None,
        "curve": curve,
        "largest_step": max(steps) / total if steps and total > 0 else None,
        # how far the worst fall exceeds what the draws' noise explains (<= 0: none does)
        "fall_beyond_noise": max((-s - n for s, n in zip(steps, noise, strict=True)), default=0.0),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _said(holds: bool) -> str:
    return "reproduced" if holds else "not reproduced"


def _spread(errors: list[float]) -> str:
    return f"{_pct(statistics.fmean(errors))} ({_pct(min(errors))} .. {_pct(max(errors))})"


def _pts(x: float) -> str:
    return f"{100 * x:+.2f} points"


def _twin_verdict(plain: dict[str, Any], res: dict[str, Any]) -> Verdict:
    p, r = summary(plain), summary(res)
    text = (
        f"deleting one block that keeps the shape raises {res['label']}'s test error by {_pts(r['rise'])} on "
        f"average (to at most {100 * r['keep_max']:.2f}%), {plain['label']}'s by {_pts(p['rise'])} "
        f"(to at most {100 * p['keep_max']:.2f}%)"
    )
    if p["rise"] <= 0:
        return Verdict(f"{text}: the plain net does not suffer, so there is nothing to compare", None)
    holds = r["rise"] <= TWIN_RATIO * p["rise"]
    ratio = r["rise"] / p["rise"]
    claim = f"the ResNet loses {ratio:.2f}x what its plain twin loses (at most {TWIN_RATIO:g}x to count)"
    return Verdict(f"{text}: {claim}: {_said(holds)}", holds)


def verdicts(nets: list[dict[str, Any]]) -> list[Verdict]:
    """Twins compared, plain nets against chance, ResNets' downsampling blocks, smoothness in k,
    and the trend with depth."""
    out = [_twin_verdict(p, r) for p, r in trained_nets.twins(nets)]
    for n in nets:
        s = summary(n)
        if not n["residual"] and s["to_chance"] is not None:
            holds = s["to_chance"] >= CHANCE_SHARE
            out.append(
                Verdict(
                    f"deleting one block of {n['label']} takes it {100 * s['to_chance']:.0f}% of the way "
                    f"from its intact error to chance (mean {100 * s['keep_mean']:.2f}%): towards chance "
                    f"(at least {100 * CHANCE_SHARE:.0f}% to count) {_said(holds)}",
                    holds,
                )
            )
        if n["residual"] and s["down_mean"] is not None and s["keep_mean"] is not None:
            holds = s["down_mean"] > s["keep_mean"]
            out.append(
                Verdict(
                    f"{n['label']} without a downsampling block: {100 * s['down_mean']:.2f}% mean error, "
                    f"without a shape-keeping one: {100 * s['keep_mean']:.2f}%: downsampling blocks matter "
                    f"more {_said(holds)}",
                    holds,
                )
            )
        if n["residual"]:
            out.append(_smooth_verdict(n, s, nets))
    for shallow, deep in trained_nets.deeper(nets, residual=True):
        a, b = summary(shallow)["rise"], summary(deep)["rise"]
        if a is None or b is None:
            continue
        holds = b < a
        out.append(
            Verdict(
                f"mean rise from one deleted block: {deep['label']} {_pts(b)} vs {shallow['label']} "
                f"{_pts(a)}: the deeper ResNet depends less on any one block {_said(holds)}",
                holds,
            )
        )
    if not out:
        out.append(Verdict("no net with a block that can be deleted: nothing to judge", None))
    return out


def _smooth_verdict(n: dict[str, Any], s: dict[str, Any], nets: list[dict[str, Any]]) -> Verdict:
    curve = s["curve"]
    text = (
        f"{n['label']} with k = 0..{len(curve) - 1} blocks deleted: {100 * curve[0]:.2f}% -> "
        f"{100 * curve[-1]:.2f}% mean error"
    )
    if len(curve) < 3 or s["largest_step"] is None:
        return Verdict(f"{text}: too few blocks to judge smoothness", None)
    text += f", the largest single step {100 * s['largest_step']:.0f}% of the whole rise"
    plain = [p for p, r in trained_nets.twins(nets) if r is n]
    if plain and summary(plain[0])["largest_step"] is not None:
        text += f" ({plain[0]['label']}: {100 * summary(plain[0])['largest_step']:.0f}%)"
    holds = s["largest_step"] <= SMOOTH_SHARE and s["fall_beyond_noise"] <= 0
    rule = f"no step over {100 * SMOOTH_SHARE:.0f}%, no fall beyond the draws' noise"
    return Verdict(f"{text}: smooth growth with k ({rule}) {_said(holds)}", holds)


# ---- the report ---------------------------------------------------------------------------------


def _by_depth(nets: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for n in sorted(nets, key=lambda n: (len(n["blocks"]), n["residual"])):
        groups.setdefault(len(n["blocks"]), []).append(n)
    return groups


def _tables(nets: list[dict[str, Any]], record: dict[str, Any]) -> list[Table]:
    rows = []
    for n in nets:
        s = summary(n)
        fp32 = (
            "" if n["intact_error_fp32"] == n["intact_error"] else f" (fp32 {_pct(n['intact_error_fp32'])})"
        )
        rows.append(
            [
                n["label"],
                _pct(n["intact_error"]) + fp32,
                f"{_pct(s['keep_mean'])} ({_pct(s['keep_min'])} .. {_pct(s['keep_max'])})",
                _pct(s["down_mean"]) if n["residual"] else f"not deletable ({s['not_deletable']})",
                "n/a" if s["to_chance"] is None else f"{100 * s['to_chance']:.0f}%",
                _pct(s["curve"][-1]),
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
                _pct(n["blocks"][i]["error"]) if n["blocks"][i]["deletable"] else "not deletable"
                for n in group
            ]
            rows.append([str(b0["index"]), b0["name"], "changes" if b0["shape_changes"] else "keeps", *cells])
        rows.append(["none", "", "", *[_pct(n["intact_error"]) for n in group]])
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
    out.append(trained_nets.origins(nets))
    return out


def _paper_table(nets: list[dict[str, Any]]) -> Table:
    def ours(pick, fmt) -> str:
        parts = [f"{n['label']}: {fmt(n, summary(n))}" for n in nets if pick(n)]
        return "; ".join(parts) or "no such net measured"

    rows = [
        [
            "one block deleted, ResNet",
            PAPER["single"],
            ours(
                lambda n: n["residual"],
                lambda n, s: f"{_pts(s['rise'])} on average" if s["rise"] is not None else "n/a",
            ),
        ],
        [
            "one block deleted, plain net",
            PAPER["plain"],
            ours(lambda n: not n["residual"], lambda n, s: f"{_pct(s['keep_mean'])} on average"),
        ],
        [
            "downsampling blocks",
            PAPER["down"],
            ours(lambda n: n["residual"], lambda n, s: f"{_pct(s['down_mean'])} vs {_pct(s['keep_mean'])}"),
        ],
        [
            "k blocks deleted",
            PAPER["k"],
            ours(
                lambda n: n["residual"],
                lambda n, s: (
                    f"{_pct(s['curve'][0])} -> {_pct(s['curve'][-1])} over k = 0..{len(s['curve']) - 1}"
                ),
            ),
        ],
    ]
    return Table("Veit et al. (2016) beside ours", ["finding", "Veit et al.", "ours"], rows)


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
        meta=trained_nets.study_meta(record, budget),
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
