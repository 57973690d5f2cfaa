"""What the landscape study's numbers say, as pure functions of a record's nets: at CLAIM_DEPTH (56)
layers and deeper the ResNet has the smaller |lambda_min / lambda_max| than its plain twin (Li et
al.'s claim); shallower pairs are reported, not judged (Li et al. find the 20-layer plain net still
near-convex); and among plain nets trained alike the deeper one has the larger ratio.
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
