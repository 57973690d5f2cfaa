"""One module per result of the paper: spec -> runs (through the engine) -> metrics files -> figures.

Each experiment module has ``run(opts, ...) -> record`` (train or reuse what it needs, measure, and
write ``OUT/<experiment>.json``) and ``section(out, record) -> Section`` (tables, verdicts and figures
computed from the files alone). :func:`build_report` turns every record found in a folder into one
report, so ``resnetlab report DIR`` redraws everything without training. What the experiments share:
:mod:`~.options`, :mod:`~.cifar_nets` (the nets), :mod:`~.training` (their runs),
:mod:`~.finished_runs` (reading them back), :mod:`~.stats` (seed statistics) and :mod:`~.records`.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from pathlib import Path
from types import ModuleType

import torch

from resnetlab.errors import UserError

# experiment name (as on the command line and in OUT/<name>.json) -> module, in report order
EXPERIMENTS = {
    "degradation": "resnetlab.experiments.degradation",
    "responses": "resnetlab.experiments.responses",
    "gradients": "resnetlab.experiments.gradients",
    "identity": "resnetlab.experiments.identity",
    "shortcuts": "resnetlab.experiments.shortcuts",
    "cifar-table": "resnetlab.experiments.cifar_table",
    "lesion": "resnetlab.experiments.lesion",
    "landscape": "resnetlab.experiments.landscape",
}


def experiment_module(name: str) -> ModuleType:
    """The module that implements experiment ``name``."""
    return importlib.import_module(EXPERIMENTS[name])


def build_report(out: Path) -> tuple[Path, Path]:
    """Redraw every figure and write ``out/report.md`` and ``out/report.html`` from the files in ``out``.

    Each experiment's tables and verdicts are also stored back into its ``out/<name>.json``.
    """
    from resnetlab import __version__
    from resnetlab.experiments.records import read_record, record_path, write_record
    from resnetlab.reporting.report import write_report

    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out} is not a directory: give the --out folder of a reproduce command")
    sections = []
    for name in EXPERIMENTS:
        path = record_path(out, name)
        if not path.is_file():
            continue
        record = read_record(path)
        try:
            section = experiment_module(name).section(out, record)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # A record is only ever written whole by `reproduce`; one that lacks what its section
            # reads was edited or comes from elsewhere. Name it instead of showing a traceback.
            what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise UserError(
                f"{path} is not a complete {name} record ({what}): rerun `resnetlab reproduce {name}`"
            ) from None
        record["results"] = {
            "tables": [dataclasses.asdict(t) for t in section.tables],
            "verdicts": [{"text": v.text, "holds": v.holds, "mark": v.mark} for v in section.verdicts],
        }
        write_record(out, record)
        sections.append(section)
    if not sections:
        names = ", ".join(f"{n}.json" for n in EXPERIMENTS)
        raise UserError(f"{out} holds no reproduction records ({names}): run `resnetlab reproduce ...` first")
    header = {
        "folder": str(out.resolve()),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "written by": f"resnetlab {__version__}, torch {torch.__version__}",
    }
    return write_report(out, sections, header)
