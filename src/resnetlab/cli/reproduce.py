"""`resnetlab reproduce EXPERIMENT` (train what a result of the paper needs, then report) and
`resnetlab report DIR` (redraw figures and report from the metrics files alone)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resnetlab.data.datasets import SPEC_HELP
from resnetlab.engine.precision import PRECISIONS
from resnetlab.errors import UserError
from resnetlab.experiments import EXPERIMENTS, build_report, experiment_module
from resnetlab.experiments.cifar_nets import parse_depths
from resnetlab.experiments.degradation import DEFAULTS
from resnetlab.experiments.options import Options
from resnetlab.experiments.records import read_record, record_path
from resnetlab.weights import WEIGHTS_HELP

HELP = {
    "degradation": "plain vs residual nets of several depths: Fig. 1 and Fig. 6, training and test error",
    "responses": "std of every 3x3 layer's response of trained plain and residual nets (Fig. 7)",
    "gradients": "per-layer weight-gradient norms at initialisation and after training, plain vs residual",
    "identity": "can stacked layers learn the identity? plain vs residual blocks; the construction argument",
    "shortcuts": "shortcut options A, B and C on the same CIFAR net and budget (Table 3 shape)",
    "cifar-table": "Table 6 rows: test error of ResNets of several depths (mean ± std with --seeds 2 and up)",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _common(p: argparse.ArgumentParser, name: str) -> None:
    own = "; with --nets, each net's own" if name == "responses" else ""
    # default None, filled in by options(): --nets must tell a given --dataset from the default
    p.add_argument("--dataset", help=f"{SPEC_HELP} (default: {DEFAULTS.dataset}{own})")
    p.add_argument("--data-dir", help="where datasets are cached or downloaded (default: the library's)")
    p.add_argument(
        "--out", type=Path, default=Path("runs") / name, help="output folder (default: %(default)s)"
    )
    p.add_argument("--seeds", type=_positive_int, default=DEFAULTS.seeds, help="seeds per net (default: 1)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-iterations", type=_positive_int, metavar="N", help="SGD iterations per run")
    budget.add_argument(
        "--budget-minutes",
        type=_positive_float,
        metavar="M",
        help=f"minutes for the whole reproduction, all runs together (default: {DEFAULTS.budget_minutes:g})",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): bf16 autocast where the device computes bf16 natively, fp32 elsewhere",
    )
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per batch (default: 128)")
    p.add_argument(
        "--evals",
        type=int,
        default=DEFAULTS.evals,
        help="intermediate test evaluations per run (default: %(default)s)",
    )
    p.add_argument(
        "--eval-limit",
        type=_positive_int,
        default=DEFAULTS.eval_limit,
        help="images per intermediate evaluation; the final one uses all (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the verdicts and where the report is")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="reproduce a result of the paper and write a report with figures")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=type(p))
    experiments.required = True
    depths_default = ",".join(str(d) for d in DEFAULTS.depths)
    for name, text in HELP.items():
        e = experiments.add_parser(name, help=text, description=text)
        _common(e, name)
        if name in ("degradation", "gradients"):
            e.add_argument(
                "--depths", default=depths_default, help="CIFAR depths 6n+2 (default: %(default)s)"
            )
        e.set_defaults(func=run_reproduce)
    g = experiments.choices
    which = g["responses"].add_mutually_exclusive_group()
    which.add_argument(
        "--depths", default=depths_default, help="CIFAR depths 6n+2 to train (default: %(default)s)"
    )
    which.add_argument(
        "--nets",
        metavar="REF,REF,...",
        help=f"measure these trained nets instead of training any; each REF is {WEIGHTS_HELP}",
    )
    g["responses"].add_argument(
        "--test-images", type=_positive_int, help="test images to measure on (default: all)"
    )
    g["gradients"].add_argument(
        "--batches", type=_positive_int, default=4, help="batches to average each norm over (default: 4)"
    )
    ident = g["identity"]
    ident.add_argument("--ks", default="1,2,4,8", help="numbers of stacked blocks K (default: %(default)s)")
    ident.add_argument(
        "--width", type=_positive_int, default=8, help="channels of the feature maps (default: 8)"
    )
    ident.add_argument(
        "--size", type=_positive_int, default=8, help="height = width of the maps (default: 8)"
    )
    ident.add_argument("--steps", type=_positive_int, default=300, help="SGD steps per stack (default: 300)")
    ident.add_argument(
        "--inputs",
        choices=("random", "images"),
        default="random",
        help="maps to reproduce: relu of Gaussian noise, or features of --dataset images (default: random)",
    )
    ident.add_argument(
        "--depths",
        default=depths_default,
        help="shallow,deep CIFAR depths of the construction (default: %(default)s)",
    )
    ident.add_argument("--no-construction", action="store_true", help="skip the construction (no training)")
    ident.add_argument(
        "--train-images",
        type=_positive_int,
        default=2000,
        help="training images the construction is scored on",
    )
    g["shortcuts"].add_argument("--depth", type=int, default=20, help="CIFAR depth 6n+2 (default: 20)")
    table = g["cifar-table"].add_mutually_exclusive_group()
    table.add_argument("--depths", default="20,32,44,56,110", help="CIFAR depths 6n+2 (default: %(default)s)")
    table.add_argument(
        "--runs",
        metavar="DIR,DIR,...",
        help="train nothing: make the rows from these finished runs of the paper's CIFAR nets (run "
        "directories of `resnetlab train` or benchmarks/paper_schedule_gpu.py, or folders of them), "
        "each shown with its iterations beside the paper's 64,000; an unfinished run is refused",
    )

    _add_studies(experiments)

    p = sub.add_parser(
        "report", help="redraw the figures and report of a reproduce --out folder (no training)"
    )
    p.add_argument("dir", type=Path, help="the --out folder of one or more `resnetlab reproduce` commands")
    p.set_defaults(func=run_report)


# Studies of given trained nets: they train nothing, so they take none of the training options.
# Their wall times depend on the machine and its load: the help names where the measured ones are
# rather than repeating a number that would drift from them.
STUDY_TIMES = "docs/studies.md in the resnetlab repository (each run with its machine and wall time)"
STUDIES = {
    "lesion": (
        "test error of trained nets with blocks deleted (Veit et al. 2016): each single block, then k "
        "random blocks, plain twins beside ResNets. Cost: per net, one pass over the test set per "
        "deletable block plus DRAWS per k = 2..n, each starting at its first deleted block (bf16 where "
        "native); --eval-limit for less. Measured times: "
        f"{STUDY_TIMES}"
    ),
    "landscape": (
        "filter-normalised 1-D and 2-D loss surfaces of trained nets and their Hessian's "
        "|lambda_min/lambda_max| (Li et al. 2018). Cost: per net, GRID^2 + 2 GRID passes over IMAGES "
        "training images (bf16 where native) and HESSIAN_STEPS Hessian-vector products (fp32, each "
        "about 12 passes' work). Measured times: "
        f"{STUDY_TIMES}"
    ),
}


def _add_studies(experiments: argparse._SubParsersAction) -> None:
    from resnetlab.experiments import landscape, lesion

    for name, text in STUDIES.items():
        e = experiments.add_parser(name, help=text.split(". Cost")[0], description=text)
        e.add_argument(
            "--nets",
            metavar="REF,REF,...",
            required=True,
            help=f"the trained nets; each REF is {WEIGHTS_HELP}",
        )
        e.add_argument("--dataset", help=f"{SPEC_HELP} (default: each net's own)")
        e.add_argument("--data-dir", help="where datasets are cached or downloaded (default: the library's)")
        e.add_argument(
            "--out",
            type=Path,
            default=Path("runs") / name,
            help="output folder (default: %(default)s); each net's measurement is kept there as it "
            "finishes, and the command run again (or with more nets) reuses those made with the same "
            "net and settings",
        )
        e.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
        e.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="of the many fast forward passes; auto (default): bf16 autocast where the device computes "
            "bf16 natively, fp32 elsewhere",
        )
        # 256: 1.4x the images per CPU-second of 128 in bf16 on 2 cores (measured, ResNet-20)
        e.add_argument(
            "--batch-size", type=_positive_int, default=256, help="images per batch (default: 256)"
        )
        e.add_argument("--seed", type=int, default=0, help="seed of the random draws (default: 0)")
        e.add_argument("--quiet", action="store_true", help="print only the verdicts and where the report is")
        e.set_defaults(func=run_study)
    g = experiments.choices
    g["lesion"].add_argument(
        "--eval-limit", type=_positive_int, help="test images per evaluation (default: all)"
    )
    g["lesion"].add_argument(
        "--draws",
        type=_positive_int,
        default=lesion.DEFAULT_DRAWS,
        help="random deletion sets per k (default: %(default)s)",
    )
    land = g["landscape"]
    land.add_argument(
        "--images",
        type=_positive_int,
        default=landscape.DEFAULT_IMAGES,
        help="training images the loss is measured on (default: %(default)s)",
    )
    land.add_argument(
        "--grid",
        type=_positive_int,
        default=landscape.DEFAULT_GRID,
        help="points per side of the 2-D grid, at least 3; the 1-D line has 2N-1 (default: %(default)s)",
    )
    land.add_argument(
        "--span",
        type=_positive_float,
        default=landscape.DEFAULT_SPAN,
        help="the scans cover [-S, S] in filter-normalised units (default: %(default)s)",
    )
    land.add_argument(
        "--hessian-steps",
        type=_positive_int,
        default=landscape.DEFAULT_HESSIAN_STEPS,
        help="Lanczos steps (Hessian-vector products) for the Hessian's extremes (default: %(default)s)",
    )


def run_study(args: argparse.Namespace) -> int:
    """``reproduce lesion|landscape``: measure the given trained nets, then report."""
    refs = tuple(r.strip() for r in args.nets.split(",") if r.strip())
    if not refs:
        raise UserError(f"--nets needs comma-separated weights references, got {args.nets!r}")
    opts = Options(
        out=args.out,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
        eval_limit=getattr(args, "eval_limit", None),
        precision=args.precision,
        quiet=args.quiet,
    )
    opts.check()
    kwargs: dict[str, Any] = {"nets": refs, "dataset": args.dataset, "seed": args.seed}
    if args.experiment == "lesion":
        kwargs["draws"] = args.draws
    else:
        if args.grid < 3:
            raise UserError(f"--grid must be at least 3 points per side, got {args.grid}")
        kwargs |= {
            "images": args.images,
            "grid": args.grid,
            "span": args.span,
            "hessian_steps": args.hessian_steps,
        }
    record = experiment_module(args.experiment).run(opts, **kwargs)
    md, page = build_report(opts.out)
    _print_verdicts(opts.out, record["experiment"])
    print(f"report: {md} and {page}")
    return 0


def options(args: argparse.Namespace) -> Options:
    """The shared options of a reproduce command; no budget given means the default minutes."""
    minutes = args.budget_minutes
    if minutes is None and args.budget_iterations is None:
        minutes = DEFAULTS.budget_minutes
    opts = Options(
        out=args.out,
        dataset=args.dataset or DEFAULTS.dataset,
        data_dir=args.data_dir,
        seeds=args.seeds,
        budget_iterations=args.budget_iterations,
        budget_minutes=minutes,
        device=args.device,
        batch_size=args.batch_size,
        evals=args.evals,
        eval_limit=args.eval_limit,
        precision=args.precision,
        quiet=args.quiet,
    )
    opts.check()
    return opts


def _experiment_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    name = args.experiment
    if name == "identity":
        depths = parse_depths(args.depths, count=2)
        if depths[0] >= depths[1]:
            raise UserError(f"--depths for identity is shallow,deep with shallow < deep, got {args.depths}")
        try:
            ks = tuple(sorted({int(k) for k in args.ks.split(",") if k.strip()}))
        except ValueError:
            ks = ()
        if not ks or ks[0] < 1:
            raise UserError(f"--ks must be positive integers like 1,2,4,8, got {args.ks!r}")
        return {
            "ks": ks,
            "width": args.width,
            "size": args.size,
            "steps": args.steps,
            "inputs": args.inputs,
            "depths": None if args.no_construction else depths,
            "train_images": args.train_images,
        }
    if name == "shortcuts":
        return {"depth": parse_depths(str(args.depth), count=1)[0]}
    if name == "responses" and args.nets is not None:
        return _nets_kwargs(args)
    if name == "cifar-table" and args.runs is not None:
        paths = tuple(Path(r.strip()) for r in args.runs.split(",") if r.strip())
        if not paths:
            raise UserError(f"--runs needs comma-separated run directories, got {args.runs!r}")
        _train_nothing(args, "--runs reads finished runs")
        if args.dataset is not None:
            raise UserError(
                "--runs reads finished runs, each with the data it was trained on: drop --dataset"
            )
        return {"runs": paths}
    kwargs: dict[str, Any] = {"depths": parse_depths(args.depths)}
    if name == "responses":
        kwargs["test_images"] = args.test_images
    if name == "gradients":
        kwargs["batches"] = args.batches
    return kwargs


def _nets_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``responses --nets``: the references, the dataset if given, and nothing about training."""
    refs = tuple(r.strip() for r in args.nets.split(",") if r.strip())
    if not refs:
        raise UserError(f"--nets needs comma-separated weights references, got {args.nets!r}")
    _train_nothing(args, "--nets measures trained nets")
    return {"nets": refs, "dataset": args.dataset, "test_images": args.test_images}


def _train_nothing(args: argparse.Namespace, what: str) -> None:
    """Refuse the training options in a command that trains nothing (``what`` says why)."""
    trains = [
        flag
        for flag, given in (
            ("--budget-iterations", args.budget_iterations is not None),
            ("--budget-minutes", args.budget_minutes is not None),
            ("--seeds", args.seeds != DEFAULTS.seeds),
        )
        if given
    ]
    if trains:
        raise UserError(f"{what} and trains none: {', '.join(trains)} does not apply")


def run_reproduce(args: argparse.Namespace) -> int:
    opts = options(args)
    kwargs = _experiment_kwargs(args)
    record = experiment_module(args.experiment).run(opts, **kwargs)
    md, page = build_report(opts.out)
    _print_verdicts(opts.out, record["experiment"])
    print(f"report: {md} and {page}")
    return 0


def _print_verdicts(out: Path, experiment: str) -> None:
    for v in read_record(record_path(out, experiment)).get("results", {}).get("verdicts", []):
        print(f"{v['mark']}: {v['text']}")


def run_report(args: argparse.Namespace) -> int:
    md, page = build_report(args.dir)
    for name in EXPERIMENTS:
        if record_path(args.dir, name).is_file():
            print(f"== {name}")
            _print_verdicts(args.dir, name)
    print(f"report: {md} and {page}")
    return 0
