"""`resnetlab runs`: where training runs stand (state, iteration, errors, rate, time left), read from
their directories alone, and optionally their error curves in one figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resnetlab.engine.run_status import checked_rows, describe, find_runs, run_status
from resnetlab.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="where training runs stand: state, iteration, errors, rate and time left")
    p.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="run directories of `resnetlab train`, or folders of them (a reproduce --out folder too)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw every run's training (thin) and test (bold) error against iterations",
    )
    p.set_defaults(func=run_runs)


def run_runs(args: argparse.Namespace) -> int:
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot {args.plot}: the figure is a PNG, give a name ending in .png")
    runs = find_runs([Path(d) for d in args.dirs])
    statuses = [run_status(r) for r in runs]
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=1))
    else:
        print("\n".join("\n".join(describe(s)) for s in statuses))
    if args.plot is not None:
        path = plot_runs(runs, Path(args.plot))
        if not args.json:
            print(f"figure: {path}")
    return 0


def plot_runs(runs: list[Path], path: Path) -> Path:
    """Training (thin) and test (bold) error of each run against iterations, one panel."""
    from resnetlab.reporting.figures import Curve, error_curves  # matplotlib only when asked

    curves = []
    for run in runs:
        rows = checked_rows(run)
        train = [r for r in rows if r["kind"] == "train"]
        evals = [r for r in rows if r["kind"] == "eval"]
        curves.append(
            Curve(
                run.name,
                [r["iteration"] for r in train],
                [r["train_error"] for r in train],
                [r["iteration"] for r in evals],
                [r["top1_error"] for r in evals],
            )
        )
    return error_curves([("", curves)], path, "training (thin) and test (bold) error")
