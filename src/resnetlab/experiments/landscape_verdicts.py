"""What the landscape study's numbers say, as pure functions of a record's nets: at CLAIM_DEPTH (56)
layers and deeper the ResNet has the smaller |lambda_min / lambda_max| than its plain twin (Li et
al.'s claim), at the trained weights and, where the record has the Hessian along the 1-D line, over
that line; shallower pairs are reported, not judged (Li et al. find the 20-layer plain net still
near-convex); and among plain nets trained alike the deeper one has the larger ratio at the centre.
"""

from __future__ import annotations

from typing import Any

from resnetlab.experiments.trained_nets import deeper, twins
from resnetlab.reporting.report import Verdict
from resnetlab.reporting.text import said

CLAIM_DEPTH = 56


def ratio(net: dict[str, Any]) -> float:
    """Li et al.'s non-convexity measure of a net: its Hessian's |lambda_min / lambda_max|."""
    return net["hessian"]["ratio"]


def line_points(net: dict[str, Any]) -> list[dict[str, Any]]:
    """The Hessian's extremes at each point of the 1-D line (``a``, ``ratio``, ...), or [] where it
    was measured at the centre only (``--hessian-points 1``, or a record made before the option)."""
    points = net.get("hessian_line") or []
    return points if len(points) > 1 else []


def worst_on_line(net: dict[str, Any]) -> dict[str, Any]:
    """The point of the line where the ratio is largest: where the net is least convex."""
    return max(line_points(net), key=lambda p: p["ratio"])


def verdicts(nets: list[dict[str, Any]]) -> list[Verdict]:
    """Twins at CLAIM_DEPTH layers and deeper judged (shallower ones reported), and plain nets'
    ratio against depth."""
    out = []
    for plain, res in sorted(twins(nets), key=lambda pr: pr[0]["depth"]):
        r, p = ratio(res), ratio(plain)
        text = f"|lambda_min/lambda_max| {res['label']} {r:.4f} vs {plain['label']} {p:.4f}"
        if res["depth"] >= CLAIM_DEPTH:
            holds = r < p
            out.append(Verdict(f"{text}: the ResNet's surface more convex {said(holds)}", holds))
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
        if line_points(plain) and line_points(res):
            out.append(_line_verdict(plain, res))
    for shallow, deep in deeper(nets, residual=False):
        holds = ratio(deep) > ratio(shallow)
        out.append(
            Verdict(
                f"|lambda_min/lambda_max| {deep['label']} {ratio(deep):.4f} vs {shallow['label']} "
                f"{ratio(shallow):.4f}: less convex with depth without shortcuts {said(holds)}",
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


def _line_verdict(plain: dict[str, Any], res: dict[str, Any]) -> Verdict:
    """The twins' largest ratio along the line, the ResNet's below the plain net's.

    The maximum, not the mean: Li et al.'s reading of their ratio maps (Fig. 7) is regional, the plain
    net has large non-convex regions away from the minimum while the ResNet stays near-convex
    everywhere in the plotted region. That is a statement about the least convex point each net has:
    a mean would let a wide near-convex stretch hide a non-convex region, and a centre where the
    plain net is sharp (a large lambda_max, so a small ratio) weighs in it as much as any other point.
    """
    worst_res, worst_plain = worst_on_line(res), worst_on_line(plain)
    text = (
        f"largest |lambda_min/lambda_max| along the line, {len(line_points(res))} points: "
        f"{res['label']} {worst_res['ratio']:.4f} (at a = {worst_res['a']:g}) vs {plain['label']} "
        f"{worst_plain['ratio']:.4f} (at a = {worst_plain['a']:g})"
    )
    smaller = worst_res["ratio"] < worst_plain["ratio"]
    if res["depth"] >= CLAIM_DEPTH:
        return Verdict(f"{text}: the ResNet's surface more convex along the line {said(smaller)}", smaller)
    return Verdict(
        f"{text}: the ResNet's is {'smaller' if smaller else 'not smaller'}; reported, not judged, "
        f"below {CLAIM_DEPTH} layers",
        None,
    )
