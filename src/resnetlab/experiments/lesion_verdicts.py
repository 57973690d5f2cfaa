"""What the lesion study's numbers say: each ResNet judged against its plain twin (same depth,
trained alike), not against a fixed number, since Veit et al. measured 110 layers, where a block
carries less than in a 20-layer net. Pure functions of a record's nets.

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
from typing import Any

from resnetlab.experiments.trained_nets import deeper, twins
from resnetlab.reporting.report import Verdict
from resnetlab.reporting.text import pts, said

TWIN_RATIO = 0.25
CHANCE_SHARE = 0.5
SMOOTH_SHARE = 0.5
MIN_FALL = 0.01


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


def _twin_verdict(plain: dict[str, Any], res: dict[str, Any]) -> Verdict:
    p, r = summary(plain), summary(res)
    text = (
        f"deleting one block that keeps the shape raises {res['label']}'s test error by {pts(r['rise'])} on "
        f"average (to at most {100 * r['keep_max']:.2f}%), {plain['label']}'s by {pts(p['rise'])} "
        f"(to at most {100 * p['keep_max']:.2f}%)"
    )
    if p["rise"] <= 0:
        return Verdict(f"{text}: the plain net does not suffer, so there is nothing to compare", None)
    holds = r["rise"] <= TWIN_RATIO * p["rise"]
    ratio = r["rise"] / p["rise"]
    claim = f"the ResNet loses {ratio:.2f}x what its plain twin loses (at most {TWIN_RATIO:g}x to count)"
    return Verdict(f"{text}: {claim}: {said(holds)}", holds)


def verdicts(nets: list[dict[str, Any]]) -> list[Verdict]:
    """Twins compared, plain nets against chance, ResNets' downsampling blocks, smoothness in k,
    and the trend with depth."""
    out = [_twin_verdict(p, r) for p, r in twins(nets)]
    for n in nets:
        s = summary(n)
        if not n["residual"] and s["to_chance"] is not None:
            holds = s["to_chance"] >= CHANCE_SHARE
            out.append(
                Verdict(
                    f"deleting one block of {n['label']} takes it {100 * s['to_chance']:.0f}% of the way "
                    f"from its intact error to chance (mean {100 * s['keep_mean']:.2f}%): towards chance "
                    f"(at least {100 * CHANCE_SHARE:.0f}% to count) {said(holds)}",
                    holds,
                )
            )
        if n["residual"] and s["down_mean"] is not None and s["keep_mean"] is not None:
            holds = s["down_mean"] > s["keep_mean"]
            out.append(
                Verdict(
                    f"{n['label']} without a downsampling block: {100 * s['down_mean']:.2f}% mean error, "
                    f"without a shape-keeping one: {100 * s['keep_mean']:.2f}%: downsampling blocks matter "
                    f"more {said(holds)}",
                    holds,
                )
            )
        if n["residual"]:
            out.append(_smooth_verdict(n, s, nets))
    for shallow, deep in deeper(nets, residual=True):
        a, b = summary(shallow)["rise"], summary(deep)["rise"]
        if a is None or b is None:
            continue
        holds = b < a
        out.append(
            Verdict(
                f"mean rise from one deleted block: {deep['label']} {pts(b)} vs {shallow['label']} "
                f"{pts(a)}: the deeper ResNet depends less on any one block {said(holds)}",
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
    plain = [p for p, r in twins(nets) if r is n]
    if plain and summary(plain[0])["largest_step"] is not None:
        text += f" ({plain[0]['label']}: {100 * summary(plain[0])['largest_step']:.0f}%)"
    holds = s["largest_step"] <= SMOOTH_SHARE and s["fall_beyond_noise"] <= 0
    rule = f"no step over {100 * SMOOTH_SHARE:.0f}%, no fall beyond the draws' noise"
    return Verdict(f"{text}: smooth growth with k ({rule}) {said(holds)}", holds)
