"""What the identity experiment's numbers say, as pure functions of its record: residual blocks
learn the identity better than plain ones, plain stacks the harder the more blocks they have; the
net built from a shallower one plus identity layers matches it exactly, and a deeper plain net
trained from scratch does worse (degradation) where a deeper ResNet does not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.stats import Stat, clearly_above
from resnetlab.reporting.report import PAPER_ITERATIONS, Verdict
from resnetlab.reporting.text import said


@dataclass(frozen=True)
class Construction:
    """Part 2 for one kind of net, over seeds: the shallow net, the deeper net built from it and the
    deeper net trained from scratch."""

    small: CifarNet
    big: CifarNet
    shallow: Stat
    built: Stat
    scratch: Stat
    diff: float  # the largest logit change between a shallow net and its deepened copy
    extra: str  # what was added, in words


def construction_stats(construction: dict[str, Any]) -> list[Construction]:
    """Part 2 over seeds, plain nets first, then residual."""
    lo, hi = construction["depths"]
    out = []
    for residual in (False, True):
        rows = [r for r in construction["rows"] if r["residual"] == residual]
        shallow, built, scratch = (Stat.of([r[k] for r in rows]) for k in ("shallow", "built", "scratch"))
        extra = f"{(hi - lo) // 2} zero-gamma residual blocks" if residual else f"{hi - lo} identity layers"
        diff = max(r["max_logit_diff"] for r in rows)
        out.append(
            Construction(CifarNet(lo, residual), CifarNet(hi, residual), shallow, built, scratch, diff, extra)
        )
    return out


def construction_verdicts(construction: dict[str, Any], iterations: int) -> list[Verdict]:
    """Built == shallow exactly; scratch vs built (degradation for plain nets, none with shortcuts)."""
    verdicts = []
    for c in construction_stats(construction):
        same = abs(c.built.mean - c.shallow.mean) < 1e-12 and c.diff < 1e-3
        verdicts.append(
            Verdict(
                f"{c.big.label} built from {c.small.label} + {c.extra}: training error {c.built} "
                f"{'=' if same else '!='} {c.small.label}'s {c.shallow} (max logit difference {c.diff:.2g}): "
                f"a deeper net at least as good as the shallower one {'exists' if same else 'was not built'}",
                same,
            )
        )
        worse = clearly_above(c.scratch, c.built)
        text = f"{c.big.label} trained from scratch: {c.scratch} vs {c.built} for the built one: "
        if not c.small.residual:
            found = "did not find" if worse else "found"
            verdicts.append(
                Verdict(f"{text}SGD {found} a solution as good (degradation {said(worse)})", worse)
            )
        else:
            short = iterations < PAPER_ITERATIONS / 10
            verdicts.append(
                Verdict(
                    text + ("no worse: no degradation with shortcuts" if not worse else "worse so far"),
                    True if not worse else (None if short else False),
                )
            )
    return verdicts


def learn_stats(record: dict[str, Any]) -> dict[tuple[int, bool], Stat]:
    """Remaining error per (K, residual) over seeds."""
    found: dict[tuple[int, bool], list[float]] = {}
    for row in record["learn"]["rows"]:
        found.setdefault((row["k"], row["residual"]), []).append(row["error"])
    return {key: Stat.of(v) for key, v in found.items()}


def learn_verdicts(stats: dict[tuple[int, bool], Stat], ks: list[int]) -> list[Verdict]:
    """Residual below plain at every K; plain error growing from the smallest to the largest K."""
    pairs = ", ".join(f"K={k}: {stats[k, False].mean:.3g} vs {stats[k, True].mean:.3g}" for k in ks)
    better = all(clearly_above(stats[k, False], stats[k, True]) for k in ks)
    claim = "residual blocks learn the identity better than plain blocks"
    out = [
        Verdict(
            f"remaining error plain vs residual, {pairs}: {claim}: {said(better)}",
            better,
        )
    ]
    if len(ks) > 1:
        first, last = stats[ks[0], False], stats[ks[-1], False]
        grows = clearly_above(last, first)
        out.append(
            Verdict(
                f"plain blocks: K={ks[0]} {first.mean:.3g} -> K={ks[-1]} {last.mean:.3g}: stacking more "
                f"nonlinear layers makes the identity {'harder' if grows else 'not clearly harder'} to learn",
                grows,
            )
        )
    return out
