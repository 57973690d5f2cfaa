"""Shortcut options A, B and C (Sec. 3.3, Table 3) on the same CIFAR net, budget and seeds.

A: identity, zero-padding where the shape changes (no parameters); B: 1x1 projections only where
the shape changes; C: projections on every shortcut. The plain twin is trained alongside, as
Table 3 lists plain-34 beside the three ResNet-34s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from resnetlab.experiments import degradation, finished_runs, records, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet, parse_depths
from resnetlab.experiments.declaration import Experiment, arg
from resnetlab.experiments.options import Options
from resnetlab.experiments.stats import Stat, clearly_above
from resnetlab.reporting import figures
from resnetlab.reporting.report import Figure, Section, Table, Verdict, budget_note

NAME = "shortcuts"
CLAIM = (
    "All three shortcut options are considerably better than the plain net; B is slightly better than A "
    "(A's zero-padded dimensions learn no residual) and C marginally better than B (extra parameters), "
    "so projections are not essential to address degradation (Sec. 3.3, Table 3: ImageNet ResNet-34)."
)
# Table 3 of the paper: ImageNet val, 10-crop, top-1 / top-5 error (%) of the 34-layer nets.
PAPER_IMAGENET_34 = {"plain": (28.54, 10.02), "A": (25.03, 7.76), "B": (24.52, 7.46), "C": (24.19, 7.40)}
TABLE_NOTE = (
    "The last column is the paper's ImageNet ResNet-34 (10-crop, Table 3), a different dataset and "
    "depth, given for the shape of the comparison only. Ours: CIFAR-style nets on the dataset above."
)
OPTIONS = ("A", "B", "C")
DESCRIPTION = {
    "plain": "no shortcuts",
    "A": "identity, zero-padding to add channels",
    "B": "projection where the shape changes",
    "C": "projection on every shortcut",
}


def nets_for(depth: int) -> list[CifarNet]:
    return [CifarNet(depth, False), *(CifarNet(depth, True, option) for option in OPTIONS)]


def run(opts: Options, depth: int = 20) -> dict[str, Any]:
    """Train (or reuse) the plain net and ResNets with options A, B and C; write the record."""
    started = time.perf_counter()
    nets = nets_for(depth)
    iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
    runs = training.train_all(opts, nets, iterations)
    record = records.base_record(NAME, opts, iterations, started, runs)
    record["depth"] = depth
    records.write_record(opts.out, record)
    return record


def _key(net: CifarNet) -> str:
    return net.shortcut if net.residual else "plain"


def _label(net: CifarNet) -> str:
    """The nets' labels with option A spelled out, as this comparison needs."""
    return f"{net.label} (A)" if net.residual and net.shortcut == "A" else net.label


def _order(better: Stat, worse: Stat, text: str) -> Verdict:
    """``better`` should have the lower test error; a gap within noise is inconclusive."""
    if clearly_above(worse, better):
        return Verdict(f"{text}: reproduced", True)
    if clearly_above(better, worse):
        return Verdict(f"{text}: the order is reversed: not reproduced", False)
    return Verdict(f"{text}: within noise (the paper's gaps are 0.3-0.5 points): cannot tell", None)


def verdicts(res: dict[str, degradation.FinalErrors]) -> list[Verdict]:
    """Every option beats plain; B beats A; C beats B (test error)."""
    out = []
    if "plain" in res:
        plain = res["plain"].test
        beat = [o for o in OPTIONS if o in res and clearly_above(plain, res[o].test)]
        listed = ", ".join(f"{o} {res[o].test}" for o in OPTIONS if o in res)
        present = [o for o in OPTIONS if o in res]
        lost = [o for o in present if clearly_above(res[o].test, plain)]
        if len(beat) == len(present):
            holds, text = True, "every option beats the plain net: reproduced"
        elif lost:
            holds, text = False, f"option {', '.join(lost)} is worse than the plain net: not reproduced"
        else:  # no option clearly worse, some not clearly better: the gaps are within noise
            holds, text = None, "not every option clearly beats the plain net: within noise, cannot tell"
        out.append(Verdict(f"test error plain {plain} vs options {listed}: {text}", holds))
    for better, worse in (("B", "A"), ("C", "B")):
        if better in res and worse in res:
            b, w = res[better].test, res[worse].test
            out.append(_order(b, w, f"option {better} test error {b} vs option {worse} {w}"))
    return out


def section(out: Path, record: dict[str, Any]) -> Section:
    """Table 3 shape: error and parameters per option, the paper's ImageNet numbers beside."""
    res = {_key(n): r for n, r in degradation.results(out, record).items()}
    rows = []
    for key in ("plain", *OPTIONS):
        if key not in res:
            continue
        r = res[key]
        top1, top5 = PAPER_IMAGENET_34[key]
        rows.append(
            [
                _label(r.net),
                DESCRIPTION[key],
                f"{r.params:,}",
                str(r.train),
                str(r.test),
                f"{top1:.2f} / {top5:.2f}",
            ]
        )
    keys = [k for k in ("plain", *OPTIONS) if k in res]
    iterations = record["budget"]["iterations"]
    fig = figures.bars(
        [_label(res[k].net) for k in keys],
        [100 * res[k].test.mean for k in keys],
        out / "figures" / "shortcuts.png",
        f"{record['dataset']}: test error per option, depth {record['depth']}, {iterations:,} iterations",
        "test error (%)",
        errors=[100 * res[k].test.std for k in keys],
    )
    grouped = degradation.runs_by_net(out, record)
    curves = figures.error_curves(
        [
            (
                "training (thin) and test (bold) error",
                [finished_runs.mean_curve(grouped[res[k].net], _label(res[k].net)) for k in keys],
            )
        ],
        out / "figures" / "shortcuts-curves.png",
        f"{record['dataset']}: plain vs shortcut options A, B, C",
    )
    return Section(
        title="Shortcut options A, B, C (Table 3)",
        claim=CLAIM,
        meta=records.section_meta(record),
        budget_note=budget_note(iterations),
        tables=[
            Table(
                f"Depth {record['depth']}: errors and parameters per shortcut option",
                [
                    "net",
                    "shortcut",
                    "params",
                    "training error",
                    "test error",
                    "paper: ImageNet-34 top-1 / top-5 (%)",
                ],
                rows,
                TABLE_NOTE,
            )
        ],
        verdicts=verdicts(res),
        figures=[
            Figure(fig, "Test error per option (mean ± std over seeds)."),
            Figure(curves, "Error curves of the plain net and the three options."),
        ],
    )


EXPERIMENT = Experiment(
    name=NAME,
    order=50,
    summary="shortcut options A, B and C on the same CIFAR net and budget (Table 3 shape)",
    run=run,
    section=section,
    args=(arg("--depth", "CIFAR depth 6n+2 (default: 20)", type=int, default=20),),
    kwargs=lambda args: {"depth": parse_depths(str(args.depth), count=1)[0]},
)
