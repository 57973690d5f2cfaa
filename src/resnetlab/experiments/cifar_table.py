"""Table 6 of the paper: CIFAR-10 test error of ResNets by depth (mean ± std where several seeds), params.

The rows come from nets this command trains, or from finished runs trained elsewhere (``--runs``:
long runs of `resnetlab train` or of the GPU fleet script), each checked and shown with its length
beside the paper's 64k iterations.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from resnetlab.errors import UserError
from resnetlab.experiments import degradation, finished_runs, records, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.declaration import Experiment, arg
from resnetlab.experiments.options import Options
from resnetlab.experiments.stats import clearly_above
from resnetlab.models.zoo import model_info
from resnetlab.reporting import figures
from resnetlab.reporting.report import (
    LENGTH_HEADER,
    PAPER_ITERATIONS,
    Figure,
    Section,
    Table,
    Verdict,
    lengths_note,
    lengths_title,
    run_length,
)

NAME = "cifar-table"
CLAIM = (
    "On CIFAR-10 with the 64k-iteration recipe, test error falls with depth: ResNet-20 8.75%, 32 7.51%, "
    "44 7.17%, 56 6.97%, 110 6.43% (best of 5; 6.61 ± 0.16), while ResNet-1202 overfits (7.93%) (Table 6)."
)
PAPER_NOTE = (
    "The paper chose its schedule on a 45k/5k split; its ResNet-110 figure is the best of 5 runs (mean "
    "6.61 ± 0.16). Table 6 has no plain nets and only option A."
)
TRAIN_ERROR = "training error (last 10% of iterations)"  # engine.run_status.final_train_error's measure
PAPER_RECIPE = "cifar-paper"  # the recipe of Table 6 (see resnetlab.recipes); given runs must use it
PAPER_TOLERANCE = 1.0  # points of test error within which we call our mean "the paper's number"


def paper_row(depth: int) -> tuple[float | None, float | None]:
    """(params, test error %) that Table 6 gives for ResNet-``depth``, or Nones."""
    try:
        info = model_info(f"resnet{depth}")
    except UserError:
        return None, None
    return info.paper_params, info.paper_error


def _paper(net: CifarNet) -> tuple[float | None, float | None]:
    """Table 6's (params, test error %) for ``net``: only its option-A ResNets have a row."""
    return paper_row(net.depth) if net.residual and net.shortcut == "A" else (None, None)


def run(opts: Options, depths: tuple[int, ...] = (), runs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Train (or reuse) a ResNet of every depth with every seed, or take the finished ``runs``
    (training nothing); write the record."""
    started = time.perf_counter()
    if runs:
        given = finished_runs.given_runs(runs, recipe=PAPER_RECIPE, needs="Table 6 rows")
        record = records.given_record(NAME, opts, given, started)
    else:
        nets = [CifarNet(d, True) for d in sorted(depths)]
        iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
        record = records.base_record(
            NAME, opts, iterations, started, training.train_all(opts, nets, iterations)
        )
        record["depths"] = sorted(depths)
    records.write_record(opts.out, record)
    return record


def verdicts(res: dict[CifarNet, degradation.FinalErrors], lengths: dict[CifarNet, int]) -> list[Verdict]:
    """Deeper is better (shallowest vs deepest ResNet, up to 110 layers); our error near the paper's.
    ``lengths``: the iterations each net trained for (the shortest of its seeds)."""
    nets = sorted(
        (n for n in res if n.residual and n.shortcut == "A" and n.depth <= 110), key=lambda n: n.depth
    )
    out = []
    if len(nets) > 1:
        lo, hi = res[nets[0]], res[nets[-1]]
        short = min(lengths[nets[0]], lengths[nets[-1]]) < PAPER_ITERATIONS / 10
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
        paper = _paper(n)[1]
        if paper is None:
            continue
        ours = 100 * res[n].test.mean
        text = f"{n.label} test error {ours:.2f}% vs the paper's {paper:.2f}%"
        if lengths[n] < PAPER_ITERATIONS:
            text += f" after {lengths[n]:,} of the paper's {PAPER_ITERATIONS:,} iterations"
        if lengths[n] < PAPER_ITERATIONS / 10:
            out.append(Verdict(f"{text}: the budget is far too short to compare with the paper", None))
        else:
            close = abs(ours - paper) <= PAPER_TOLERANCE + 100 * res[n].test.std
            out.append(
                Verdict(f"{text}: {'within' if close else 'beyond'} {PAPER_TOLERANCE:g} point(s)", close)
            )
    return out


def table_note(seeds: list[int]) -> str:
    """The note under the rows: what "ours" is, given each row's number of seeds.

    A std needs two seeds; a table of single runs must not claim one.
    """
    if max(seeds) == 1:
        ours = "Ours: one run per net (one seed, so no std): its final test error on the whole test set"
    elif min(seeds) == max(seeds):
        ours = f"Ours: mean ± std over {seeds[0]} seeds of the final test error on the whole test set"
    else:
        ours = (
            f"Ours: mean ± std over each net's seeds ({min(seeds)} to {max(seeds)}; a single value where "
            "there is one seed) of the final test error on the whole test set"
        )
    return f"{ours}; {TRAIN_ERROR}: the mean logged training error over the run's last tenth. {PAPER_NOTE}"


def section(out: Path, record: dict[str, Any]) -> Section:
    """Table 6 rows beside the paper's, a figure of error against depth, the verdicts."""
    res = degradation.results(out, record)
    runs = degradation.runs_by_net(out, record)
    lengths = degradation.run_lengths(runs)
    nets = sorted(res, key=lambda n: (not n.residual, n.depth, n.shortcut))
    rows = []
    for n in nets:
        params, error = _paper(n)
        rows.append(
            [
                n.label,
                f"{res[n].params / 1e6:.2f}M",
                "-" if params is None else f"{params / 1e6:.2f}M",
                run_length(lengths[n]),
                str(res[n].test),
                "-" if error is None else f"{error:.2f}%",
                str(res[n].train),
            ]
        )
    fig = figures.bars(
        [n.label for n in nets],
        [100 * res[n].test.mean for n in nets],
        out / "figures" / "cifar-table.png",
        f"{record['dataset']}: test error by depth, {lengths_title(lengths.values())}, "
        f"{record['seeds']} seed(s)",
        "test error (%)",
        errors=[100 * res[n].test.std for n in nets],
        reference=[_paper(n)[1] for n in nets],
        reference_label="paper (Table 6, 64k iterations)",
    )
    curves = {n: finished_runs.mean_curve(runs[n], n.label) for n in nets}
    panels = [
        (title, [curves[n] for n in nets if n.residual == residual])
        for title, residual in (("plain networks", False), ("residual networks", True))
        if any(n.residual == residual for n in nets)
    ]
    curves_fig = figures.error_curves(
        panels,
        out / "figures" / "cifar-table-curves.png",
        f"{record['dataset']}: training (thin) and test (bold) error of these runs (Fig. 6 style)",
    )
    return Section(
        title="CIFAR-10 ResNets by depth (Table 6)",
        claim=CLAIM,
        meta=records.section_meta(record),
        budget_note=lengths_note(list(lengths.values())),
        tables=[
            Table(
                "Table 6 rows",
                [
                    "net",
                    "params",
                    "paper params",
                    LENGTH_HEADER,
                    "test error (ours)",
                    "test error (paper)",
                    TRAIN_ERROR,
                ],
                rows,
                table_note([res[n].test.n for n in nets]),
            )
        ],
        verdicts=verdicts(res, lengths),
        figures=[
            Figure(
                fig,
                "Test error per net (bars; mean ± std over seeds where there are several) and the paper's "
                "Table 6 (diamonds).",
            ),
            Figure(
                curves_fig,
                "Training (thin) and test (bold) error against iterations (mean over seeds where several).",
            ),
        ],
    )


EXPERIMENT = Experiment(
    name=NAME,
    order=60,
    summary="Table 6 rows: test error of ResNets of several depths (mean ± std with --seeds 2 and up)",
    run=run,
    section=section,
    args=(
        arg(
            "--depths",
            "CIFAR depths 6n+2 (default: %(default)s)",
            default="20,32,44,56,110",
            exclusive="runs",
        ),
        finished_runs.runs_arg(
            "make the rows from these finished runs of the paper's CIFAR nets, each shown with its "
            "iterations beside the paper's 64,000"
        ),
    ),
    kwargs=finished_runs.depths_or_runs,
)
