"""`resnetlab reproduce EXPERIMENT` (train what a result of the paper needs, then report) and
`resnetlab report DIR` (redraw figures and report from the metrics files alone).

Each subcommand of ``reproduce`` is built from an experiment's declaration
(:class:`resnetlab.experiments.declaration.Experiment`): the options its kind shares (below), then
its own; an experiment's option with a shared option's flag replaces that one in its place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resnetlab.data.datasets import SPEC_HELP
from resnetlab.engine.precision import PRECISIONS
from resnetlab.experiments import build_report, experiments
from resnetlab.experiments.declaration import Arg, Experiment, arg, positive_float, positive_int
from resnetlab.experiments.degradation import DEFAULTS
from resnetlab.experiments.options import Options
from resnetlab.experiments.records import read_record, record_path
from resnetlab.experiments.trained_nets import parse_refs
from resnetlab.weights import WEIGHTS_HELP

DATA_DIR = "where datasets are cached or downloaded (default: the library's)"
DEVICE = "auto, cpu, cuda or mps (default: auto)"
PRECISION = "auto (default): bf16 autocast where the device computes bf16 natively, fp32 elsewhere"
QUIET = "print only the verdicts and where the report is"


def training_args(name: str) -> list[Arg]:
    """The options of every experiment that trains its nets."""
    return [
        # default None, filled in by options(): --nets must tell a given --dataset from the default
        arg("--dataset", f"{SPEC_HELP} (default: {DEFAULTS.dataset})"),
        arg("--data-dir", DATA_DIR),
        arg("--out", "output folder (default: %(default)s)", type=Path, default=Path("runs") / name),
        # default None, filled in by options(): a command that trains nothing refuses it given
        arg("--seeds", f"seeds per net (default: {DEFAULTS.seeds})", type=positive_int),
        arg(
            "--budget-iterations",
            "SGD iterations per run",
            type=positive_int,
            metavar="N",
            exclusive="budget",
        ),
        arg(
            "--budget-minutes",
            f"minutes for the whole reproduction, all runs together (default: {DEFAULTS.budget_minutes:g})",
            type=positive_float,
            metavar="M",
            exclusive="budget",
        ),
        arg("--device", DEVICE, default="auto"),
        arg("--precision", PRECISION, choices=PRECISIONS, default="auto"),
        arg("--batch-size", "images per batch (default: 128)", type=positive_int, default=128),
        arg(
            "--evals",
            "intermediate test evaluations per run (default: %(default)s)",
            type=int,
            default=DEFAULTS.evals,
        ),
        arg(
            "--eval-limit",
            "images per intermediate evaluation; the final one uses all (default: %(default)s)",
            type=positive_int,
            default=DEFAULTS.eval_limit,
        ),
        arg("--quiet", QUIET, action="store_true"),
    ]


def study_args(name: str) -> list[Arg]:
    """The options of every study of given trained nets: they train nothing, so they take none of
    the training options."""
    return [
        arg("--nets", f"the trained nets; each REF is {WEIGHTS_HELP}", metavar="REF,REF,...", required=True),
        arg("--dataset", f"{SPEC_HELP} (default: each net's own)"),
        arg("--data-dir", DATA_DIR),
        arg(
            "--out",
            "output folder (default: %(default)s); each net's measurement is kept there as it finishes, "
            "and the command run again (or with more nets) reuses those made with the same net and settings",
            type=Path,
            default=Path("runs") / name,
        ),
        arg("--device", DEVICE, default="auto"),
        arg(
            "--precision", f"of the many fast forward passes; {PRECISION}", choices=PRECISIONS, default="auto"
        ),
        # 256: 1.4x the images per CPU-second of 128 in bf16 on 2 cores (measured, ResNet-20)
        arg("--batch-size", "images per batch (default: 256)", type=positive_int, default=256),
        arg("--seed", "seed of the random draws (default: 0)", type=int, default=0),
        arg("--quiet", QUIET, action="store_true"),
    ]


def add_arguments(parser: argparse.ArgumentParser, args: list[Arg]) -> None:
    """Add ``args`` to ``parser`` in order, those of one ``exclusive`` name in one exclusive group."""
    groups: dict[str, Any] = {}
    for a in args:
        if a.exclusive and a.exclusive not in groups:
            groups[a.exclusive] = parser.add_mutually_exclusive_group()
        (groups[a.exclusive] if a.exclusive else parser).add_argument(a.flag, **a.options)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="reproduce a result of the paper and write a report with figures")
    commands = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(p))
    commands.required = True
    for name, experiment in experiments().items():
        e = commands.add_parser(name, help=experiment.summary, description=experiment.description)
        shared = training_args(name) if experiment.trains else study_args(name)
        merged = {a.flag: a for a in shared} | {a.flag: a for a in experiment.args}
        add_arguments(e, list(merged.values()))
        e.set_defaults(func=run_reproduce)

    p = sub.add_parser(
        "report", help="redraw the figures and report of a reproduce --out folder (no training)"
    )
    p.add_argument("dir", type=Path, help="the --out folder of one or more `resnetlab reproduce` commands")
    p.set_defaults(func=run_report)


def options(args: argparse.Namespace) -> Options:
    """The shared options of a command that trains; no budget given means the default minutes."""
    minutes = args.budget_minutes
    if minutes is None and args.budget_iterations is None:
        minutes = DEFAULTS.budget_minutes
    return Options(
        out=args.out,
        dataset=args.dataset or DEFAULTS.dataset,
        data_dir=args.data_dir,
        seeds=args.seeds or DEFAULTS.seeds,
        budget_iterations=args.budget_iterations,
        budget_minutes=minutes,
        device=args.device,
        batch_size=args.batch_size,
        evals=args.evals,
        eval_limit=args.eval_limit,
        precision=args.precision,
        quiet=args.quiet,
    )


def study_options(args: argparse.Namespace) -> Options:
    """The shared options of a study of given trained nets (an ``--eval-limit`` only where the
    study declares one)."""
    return Options(
        out=args.out,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
        eval_limit=getattr(args, "eval_limit", None),
        precision=args.precision,
        quiet=args.quiet,
    )


def run_reproduce(args: argparse.Namespace) -> int:
    """``reproduce NAME``: run the experiment with its options and arguments, then report."""
    experiment: Experiment = experiments()[args.experiment]
    opts = options(args) if experiment.trains else study_options(args)
    opts.check()
    kwargs = experiment.kwargs(args)
    if not experiment.trains:
        kwargs |= {"nets": parse_refs(args.nets), "dataset": args.dataset, "seed": args.seed}
    record = experiment.run(opts, **kwargs)
    md, page = build_report(opts.out)
    _print_verdicts(opts.out, record["experiment"])
    print(f"report: {md} and {page}")
    return 0


def _print_verdicts(out: Path, experiment: str) -> None:
    for v in read_record(record_path(out, experiment)).get("results", {}).get("verdicts", []):
        print(f"{v['mark']}: {v['text']}")


def run_report(args: argparse.Namespace) -> int:
    md, page = build_report(args.dir)
    for name in experiments():
        if record_path(args.dir, name).is_file():
            print(f"== {name}")
            _print_verdicts(args.dir, name)
    print(f"report: {md} and {page}")
    return 0
