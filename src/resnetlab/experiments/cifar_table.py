"""Table 6 of the paper: CIFAR-10 test error of ResNets by depth, mean ± std over seeds, params."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from resnetlab import figures
from resnetlab.errors import UserError
from resnetlab.experiments import common, degradation, shared_budget
from resnetlab.experiments.common import Net, Options, clearly_above
from resnetlab.models.zoo import model_info
from resnetlab.report import PAPER_ITERATIONS, Figure, Section, Table, Verdict, budget_note

NAME = "cifar-table"
CLAIM = (
    "On CIFAR-10 with the 64k-iteration recipe, test error falls with depth: ResNet-20 8.75%, 32 7.51%, "
    "44 7.17%, 56 6.97%, 110 6.43% (best of 5; 6.61 ± 0.16), while ResNet-1202 overfits (7.93%) (Table 6)."
)
TABLE_NOTE = (
    "Ours: mean ± std over seeds of the final test error on the whole test set. The paper chose its "
    "schedule on a 45k/5k split; its ResNet-110 figure is the best of 5 runs (mean 6.61 ± 0.16)."
)
PAPER_TOLERANCE = 1.0  # points of test error within which we call our mean "the paper's number"


def paper_row(depth: int) -> tuple[float | None, float | None]:
    """(params, test error %) that Table 6 gives for ResNet-``depth``, or Nones."""
    try:
        info = model_info(f"resnet{depth}")
    except UserError:
        return None, None
    return info.paper_params, info.paper_error


def run(opts: Options, depths: tuple[int, ...]) -> dict[str, Any]:
    """Train (or reuse) a ResNet of every depth with every seed; write the record."""
    started = time.perf_counter()
    nets = [Net(d, True) for d in sorted(depths)]
    iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
    runs = common.train_all(opts, nets, iterations)
    record = common.base_record(NAME, opts, iterations, started, runs)
    record["depths"] = sorted(depths)
    common.write_record(opts.out, record)
    return record


def verdicts(res: dict[Net, degradation.Result], iterations: int) -> list[Verdict]:
    """Deeper is better (shallowest vs deepest, up to 110 layers); our error near the paper's."""
    short = iterations < PAPER_ITERATIONS / 10
    nets = sorted((n for n in res if n.depth <= 110), key=lambda n: n.depth)
    out = []
    if len(nets) > 1:
        lo, hi = res[nets[0]], res[nets[-1]]
        text = f"{hi.net.label} test error {hi.test} vs {lo.net.label} {lo.test}"
        if clearly_above(lo.test, hi.test):
            out.append(Verdict(f"{text}: deeper is better, as in Table 6: reproduced", True))
        else:
            out.append(
                Verdict(
                    f"{text}: the deeper net is not better"
                    + (" yet; this short budget cannot test Table 6" if short else ": not reproduced"),
                    None if short else False,
                )
            )
    for n in sorted(res, key=lambda n: n.depth):
        paper = paper_row(n.depth)[1]
        if paper is None:
            continue
        ours = 100 * res[n].test.mean
        text = f"{n.label} test error {ours:.2f}% vs the paper's {paper:.2f}%"
        if short:
            out.append(Verdict(f"{text}: the budget is far too short to compare with the paper", None))
        else:
            close = abs(ours - paper) <= PAPER_TOLERANCE + 100 * res[n].test.std
            out.append(
                Verdict(f"{text}: {'within' if close else 'beyond'} {PAPER_TOLERANCE:g} point(s)", close)
            )
    return out


def section(out: Path, record: dict[str, Any]) -> Section:
    """Table 6 rows beside the paper's, a figure of error against depth, the verdicts."""
    res = degradation.results(out, record)
    nets = sorted(res, key=lambda n: n.depth)
    iterations = record["budget"]["iterations"]
    rows = []
    for n in nets:
        params, error = paper_row(n.depth)
        rows.append(
            [
                n.label,
                f"{res[n].params / 1e6:.2f}M",
                "-" if params is None else f"{params / 1e6:.2f}M",
                str(res[n].test),
                "-" if error is None else f"{error:.2f}%",
                str(res[n].train),
            ]
        )
    fig = figures.bars(
        [n.label for n in nets],
        [100 * res[n].test.mean for n in nets],
        out / "figures" / "cifar-table.png",
        f"{record['dataset']}: test error by depth, {iterations:,} iterations, {record['seeds']} seed(s)",
        "test error (%)",
        errors=[100 * res[n].test.std for n in nets],
        reference=[paper_row(n.depth)[1] for n in nets],
        reference_label="paper (Table 6, 64k iterations)",
    )
    return Section(
        title="CIFAR-10 ResNets by depth (Table 6)",
        claim=CLAIM,
        meta=common.section_meta(record),
        budget_note=budget_note(iterations),
        tables=[
            Table(
                "Table 6 rows",
                [
                    "net",
                    "params",
                    "paper params",
                    "test error (ours)",
                    "test error (paper)",
                    "training error",
                ],
                rows,
                TABLE_NOTE,
            )
        ],
        verdicts=verdicts(res, iterations),
        figures=[Figure(fig, "Test error per depth (bars, mean ± std) and the paper's Table 6 (diamonds).")],
    )
