"""One module per result of the paper: spec -> runs (through the engine) -> metrics files -> figures.

Each experiment module declares itself in its ``EXPERIMENT`` (:mod:`~.declaration`): its name and
options, ``run(opts, ...) -> record`` (train or reuse what it needs, measure, and write
``OUT/<experiment>.json``) and ``section(out, record) -> Section`` (tables, verdicts and figures
computed from the files alone). :func:`experiments` finds them all; :func:`build_report` turns every
record found in a folder into one report, so ``resnetlab report DIR`` redraws everything without
training. What the experiments that train share: :mod:`~.options`, :mod:`~.cifar_nets` (the nets),
:mod:`~.training` (their runs), :mod:`~.finished_runs` (reading them back, and the finished runs
given with ``--runs``), :mod:`~.stats` (seed statistics) and :mod:`~.records`; the studies of given
trained nets: :mod:`~.trained_nets`, :mod:`~.studies` and :mod:`~.net_measurements`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import time
from pathlib import Path

import torch

from resnetlab.errors import UserError
from resnetlab.experiments.declaration import Experiment


@functools.cache
def experiments() -> dict[str, Experiment]:
    """Every experiment declared in this package (a module with an ``EXPERIMENT``), by name, in
    their declared order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        declared = getattr(importlib.import_module(f"{__name__}.{info.name}"), "EXPERIMENT", None)
        if isinstance(declared, Experiment):
            found.append(declared)
    if len({e.name for e in found}) < len(found) or len({e.order for e in found}) < len(found):
        raise RuntimeError(f"two experiments share a name or an order: {[(e.name, e.order) for e in found]}")
    return {e.name: e for e in sorted(found, key=lambda e: e.order)}


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
    for name, experiment in experiments().items():
        path = record_path(out, name)
        if not path.is_file():
            continue
        record = read_record(path)
        try:
            section = experiment.section(out, record)
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
        names = ", ".join(f"{n}.json" for n in experiments())
        raise UserError(f"{out} holds no reproduction records ({names}): run `resnetlab reproduce ...` first")
    header = {
        "folder": str(out.resolve()),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "written by": f"resnetlab {__version__}, torch {torch.__version__}",
    }
    return write_report(out, sections, header)
