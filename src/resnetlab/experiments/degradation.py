"""The degradation problem (Fig. 1, Fig. 6, Sec. 4.2): deeper plain nets train worse; ResNets do not.

Plain and residual nets of each depth are trained with the same recipe, seed and data order (one
TrainConfig seed fixes both the initialisation stream and the batches), then compared on their
final training error (mean over the last 10% of iterations: the paper's thin curves) and test error.

``--runs DIR,...`` trains nothing: it draws the same figures and checks the same four claims on
finished runs trained elsewhere (long runs of `resnetlab train` or of the GPU fleet script), all on
one data set with one recipe, each net's row showing its own length beside the paper's 64k. This is
the home of those runs rather than ``cifar-table --runs``: this experiment owns the Fig. 1 / Fig. 6
claim and its verdicts on plain against residual nets (the deeper plain net trains worse and has a
higher test error, the residual net of its depth fixes it, the deeper ResNet trains better), while
``cifar-table`` is Table 6, ResNets only, and keeps ``--runs`` for its rows. Both read the runs
through :func:`resnetlab.experiments.finished_runs.given_runs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnetlab.engine.run_status import final_train_error
from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.errors import UserError
from resnetlab.experiments import finished_runs, records, shared_budget, training
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.declaration import Experiment, arg
from resnetlab.experiments.options import Options
from resnetlab.experiments.stats import Stat, clearly_above
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

NAME = "degradation"
CLAIM = (
    "On CIFAR-10, plain nets get a higher training error as they get deeper (plain-56 above plain-20: "
    "the degradation problem, Fig. 1 and Fig. 6 left), and residual nets of the same depth, width and "
    "parameters do not suffer from it: ResNet-56 trains better than plain-56, and deeper ResNets reach "
    "lower training and test errors (Fig. 6 middle, Table 6) after the full 64k iterations."
)


@dataclass(frozen=True)
class DegradationDefaults:
    """Defaults of `resnetlab reproduce degradation`, and so of `make demo`: change them here only."""

    # Fig. 1 compares 20 and 56 layers, but on 2 CPU cores 12 minutes buy only ~150 iterations of
    # those four nets, when ResNet-56 is still at chance. 8 and 32 layers get ~300 iterations, enough
    # for both claims on the training error; `--depths 20,56` with a GPU budget is the paper's figure.
    depths: tuple[int, ...] = (8, 32)
    # Minutes for the whole reproduction (all nets, seeds, evaluations) on the machine it runs on;
    # `make demo` must finish within 15 minutes on 2 CPU cores, data loading included.
    budget_minutes: float = 12.0
    evals: int = 4  # intermediate test evaluations per run (each on eval_limit images)
    eval_limit: int = 1000  # the final evaluation always sees the whole 10,000-image test set
    seeds: int = 1
    dataset: str = "cifar10"


DEFAULTS = DegradationDefaults()


def nets_for(depths: tuple[int, ...]) -> list[CifarNet]:
    """Plain and residual net of every depth, shallow first."""
    return [CifarNet(d, residual) for d in sorted(depths) for residual in (False, True)]


def run(opts: Options, depths: tuple[int, ...] = (), runs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Train (or reuse) plain and residual nets of every depth, or take the finished ``runs``
    (training nothing); write and return the record."""
    started = time.perf_counter()
    if runs:
        given = finished_runs.given_runs(runs)
        for (net, _), path in given.runs.items():
            if net.shortcut != "A":
                raise UserError(
                    f"{path} is {net.label}: Fig. 6 compares plain nets with option-A ResNets (`reproduce "
                    "shortcuts` compares the options)"
                )
        record = records.given_record(NAME, opts, given, started)
    else:
        nets = nets_for(depths)
        iterations = shared_budget.resolve_iterations(opts, nets, default=400, started=started)
        trained = training.train_all(opts, nets, iterations)
        record = records.base_record(NAME, opts, iterations, started, trained)
        record["depths"] = sorted(depths)
    records.write_record(opts.out, record)
    return record


def runs_by_net(out: Path, record: dict[str, Any]) -> dict[CifarNet, list[Path]]:
    """The record's run folders grouped by net (one per seed), in the record's order."""
    grouped: dict[CifarNet, list[Path]] = {}
    for entry in record["runs"]:
        net = CifarNet(entry["depth"], entry["residual"], entry["shortcut"])
        grouped.setdefault(net, []).append(out / entry["dir"])
    return grouped


def run_lengths(grouped: dict[CifarNet, list[Path]]) -> dict[CifarNet, int]:
    """The iterations each net trained for: the shortest of its seeds' runs."""
    return {net: min(int(read_summary(r)["iterations"]) for r in runs) for net, runs in grouped.items()}


@dataclass(frozen=True)
class FinalErrors:
    """Final errors of one net over its seeds."""

    net: CifarNet
    train: Stat
    test: Stat
    params: int


def results(out: Path, record: dict[str, Any]) -> dict[CifarNet, FinalErrors]:
    """Final training and test errors of every net of the record, from its metrics files."""
    found = {}
    for net, runs in runs_by_net(out, record).items():
        train = Stat.of([final_train_error(read_metrics(r)) for r in runs])
        test = Stat.of([finished_runs.final_test_error(r) for r in runs])
        found[net] = FinalErrors(net, train, test, int(read_summary(runs[0])["params"]))
    return found


def _ordering(deep: FinalErrors, shallow: FinalErrors, split: str, claim: str) -> Verdict:
    """Verdict that ``deep`` has a clearly higher error on ``split`` ("train" or "test") than ``shallow``."""
    d, s = getattr(deep, split), getattr(shallow, split)
    what = f"{deep.net.label} {split}{'ing' if split == 'train' else ''} error {d}"
    if clearly_above(d, s):
        return Verdict(f"{what} > {shallow.net.label} {s}: {claim} reproduced", True)
    relation = "<" if clearly_above(s, d) else "≈ (gap within noise)"
    return Verdict(f"{what} {relation} {shallow.net.label} {s}: {claim} not reproduced", False)


def _residual_fix(plain: FinalErrors, resnet: FinalErrors) -> Verdict:
    text = f"{resnet.net.label} training error {resnet.train}"
    if clearly_above(plain.train, resnet.train):
        return Verdict(f"{text} < {plain.net.label} {plain.train}: residual learning fixes it", True)
    return Verdict(
        f"{text} not clearly below {plain.net.label} {plain.train}: residual fix not reproduced", False
    )


def _deeper_resnet(deep: FinalErrors, shallow: FinalErrors, iterations: int) -> Verdict:
    text = f"{deep.net.label} training error {deep.train} vs {shallow.net.label} {shallow.train}"
    if clearly_above(shallow.train, deep.train):
        return Verdict(f"{text}: the deeper ResNet trains better, as in Fig. 6: reproduced", True)
    if iterations < PAPER_ITERATIONS / 10:
        return Verdict(
            f"{text}: the deeper ResNet is not better yet, but {iterations:,} of the paper's "
            f"{PAPER_ITERATIONS:,} iterations cannot test this (deeper ResNets pull ahead late in training)",
            None,
        )
    return Verdict(f"{text}: the deeper ResNet does not train better: not reproduced", False)


def verdicts(res: dict[CifarNet, FinalErrors], lengths: dict[CifarNet, int]) -> list[Verdict]:
    """The paper's claims checked against the data (training error first, then test error).
    ``lengths``: the iterations each net trained for (the shortest of its seeds)."""
    depths = sorted({n.depth for n in res})
    plain = {d: res[CifarNet(d, False)] for d in depths if CifarNet(d, False) in res}
    resnet = {d: res[CifarNet(d, True)] for d in depths if CifarNet(d, True) in res}
    lo, hi = depths[0], depths[-1]
    two_plain = lo != hi and lo in plain and hi in plain
    out: list[Verdict] = []
    if two_plain:
        out.append(_ordering(plain[hi], plain[lo], "train", "degradation"))
    if hi in plain and hi in resnet:
        out.append(_residual_fix(plain[hi], resnet[hi]))
    if lo != hi and lo in resnet and hi in resnet:
        out.append(
            _deeper_resnet(resnet[hi], resnet[lo], min(lengths[resnet[hi].net], lengths[resnet[lo].net]))
        )
    if two_plain:
        out.append(_ordering(plain[hi], plain[lo], "test", "higher test error of the deeper plain net"))
    return out


def table(res: dict[CifarNet, FinalErrors], lengths: dict[CifarNet, int] | None = None) -> Table:
    """The final errors of every net; with ``lengths`` (finished runs given), each net's length too."""
    rows = [
        [r.net.label, str(r.net.depth), f"{r.params:,}"]
        + ([run_length(lengths[r.net])] if lengths else [])
        + [str(r.train), str(r.test)]
        for r in sorted(res.values(), key=lambda r: (r.net.residual, r.net.depth))
    ]
    return Table(
        "Final errors",
        ["net", "depth", "params"]
        + ([LENGTH_HEADER] if lengths else [])
        + ["training error (last 10% of iterations)", "test error (whole test set)"],
        rows,
        "Training error: top-1 on the augmented training batches, nets in training mode (the paper's thin "
        "curves). Mean ± std over seeds where there are several.",
    )


def _how_trained(record: dict[str, Any]) -> str:
    """The note on how the nets compare: trained alike here, or finished runs given with --runs."""
    if not record.get("given_runs"):
        return "Same recipe (the paper's, lr milestones scaled to the budget), seed and data order for all."
    seeds: dict[tuple[int, bool], set[int]] = {}
    for entry in record["runs"]:
        seeds.setdefault((entry["depth"], entry["residual"]), set()).add(entry["seed"])
    same = len({frozenset(s) for s in seeds.values()}) == 1
    which = ", ".join(str(s) for s in sorted(next(iter(seeds.values()))))
    return (
        f"Finished runs given with --runs, all with the {record['recipe']} recipe on {record['dataset']}; "
        + (
            f"seed(s) {which} for every net."
            if same
            else "their seeds differ between nets, so they did not all see the same batches."
        )
    )


def section(out: Path, record: dict[str, Any]) -> Section:
    """Tables, verdicts and figures of a degradation record, from its metrics files (and each run's
    own length: runs given with --runs may differ)."""
    res = results(out, record)
    grouped = runs_by_net(out, record)
    lengths = run_lengths(grouped)
    curves = {n: finished_runs.mean_curve(runs, n.label) for n, runs in grouped.items()}
    plain = [curves[n] for n in sorted(curves, key=lambda n: n.depth) if not n.residual]
    resnet = [curves[n] for n in sorted(curves, key=lambda n: n.depth) if n.residual]
    figs = out / "figures"
    fig6 = figures.error_curves(
        [("plain networks", plain), ("residual networks", resnet)],
        figs / "degradation-fig6.png",
        f"{record['dataset']}: training (thin) and test (bold) error, {lengths_title(lengths.values())} "
        "(Fig. 6)",
    )
    shallow_deep = [plain[0], plain[-1]] if len(plain) > 1 else plain
    fig1 = figures.train_test_panels(
        shallow_deep,
        figs / "degradation-fig1.png",
        f"{record['dataset']}: plain nets, shallow vs deep (Fig. 1 style)",
    )
    return Section(
        title="Degradation: plain vs residual nets (Fig. 1, Fig. 6)",
        claim=CLAIM,
        meta=records.section_meta(record),
        budget_note=lengths_note(list(lengths.values())),
        tables=[table(res, lengths if record.get("given_runs") else None)],
        verdicts=verdicts(res, lengths),
        figures=[
            Figure(fig6, "Left plain, right residual nets: training error thin, test error bold."),
            Figure(
                fig1, "Training error (left) and test error (right) of the shallowest and deepest plain nets."
            ),
        ],
        notes=[_how_trained(record)],
    )


DEPTHS_TEXT = ",".join(str(d) for d in DEFAULTS.depths)  # the --depths default as typed

EXPERIMENT = Experiment(
    name=NAME,
    order=10,
    summary="plain vs residual nets of several depths: Fig. 1 and Fig. 6, training and test error",
    run=run,
    section=section,
    args=(
        arg("--depths", "CIFAR depths 6n+2 (default: %(default)s)", default=DEPTHS_TEXT, exclusive="runs"),
        finished_runs.runs_arg(
            "draw Fig. 6 and check its claims on these finished runs of plain nets and option-A ResNets, "
            "all on one data set with one recipe, each shown with its iterations beside the paper's 64,000"
        ),
    ),
    kwargs=finished_runs.depths_or_runs,
)
