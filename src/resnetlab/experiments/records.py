"""The experiment records: one JSON file per reproduction in its output folder, from which its report
section is redrawn."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_write
from resnetlab.engine.distributed import device_name, select_device
from resnetlab.engine.rundir import environment, read_summary
from resnetlab.errors import UserError
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.finished_runs import GivenRuns
from resnetlab.experiments.options import Options
from resnetlab.reporting.report import PAPER_ITERATIONS


def record_path(out: Path, experiment: str) -> Path:
    """Where the record of ``experiment`` lives: ``OUT/EXPERIMENT.json``."""
    return out / f"{experiment}.json"


def run_entries(out: Path, runs: dict[tuple[CifarNet, int], Path]) -> list[dict[str, Any]]:
    """How a record lists its runs: the net, the seed and the run folder, relative to ``out`` when it
    is inside it, else absolute (runs trained elsewhere)."""
    return [
        {
            "depth": n.depth,
            "residual": n.residual,
            "shortcut": n.shortcut,
            "seed": s,
            "dir": str(p.relative_to(out) if p.is_relative_to(out) else p.resolve()),
        }
        for (n, s), p in runs.items()
    ]


def header(experiment: str, device: torch.device) -> dict[str, Any]:
    """What every record starts with: the experiment, the command, versions, machine and threads."""
    return {
        "experiment": experiment,
        **environment(device_name(device), 1),
        "torch_threads": torch.get_num_threads(),
    }


def base_record(
    experiment: str,
    opts: Options,
    iterations: int | None,
    started: float,
    runs: dict[tuple[CifarNet, int], Path] | None = None,
) -> dict[str, Any]:
    """The record of an experiment that trains its nets: the header, budget, options, runs and wall
    times (a study of given trained nets has :func:`resnetlab.experiments.studies.run` instead)."""
    runs = runs or {}
    return header(experiment, select_device(opts.device)) | {
        "dataset": opts.dataset,
        "seeds": opts.seeds,
        "batch_size": opts.batch_size,
        "budget": {
            "iterations": iterations,
            "minutes": opts.budget_minutes,
            "requested_iterations": opts.budget_iterations,
        },
        "runs": run_entries(opts.out, runs),
        "runs_wall_time_s": sum(read_summary(p)["wall_time_s"] for p in runs.values()),
        "wall_time_s": time.perf_counter() - started,
    }


def given_record(experiment: str, opts: Options, given: GivenRuns, started: float) -> dict[str, Any]:
    """The record of an experiment over finished runs given with ``--runs``: it trained nothing, so
    it has no budget (each run has its own length); its data set and recipe are the runs', its
    seeds the most runs of one net, its batch size theirs."""
    seeds = max(Counter(net for net, _ in given.runs).values())
    opts = dataclasses.replace(opts, dataset=given.dataset, seeds=seeds, batch_size=given.batch_size)
    return base_record(experiment, opts, None, started, given.runs) | {
        "given_runs": True,
        "recipe": given.recipe,
        "depths": sorted({net.depth for net, _ in given.runs}),
    }


def write_record(out: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (atomically) where :func:`record_path` says; returns that path."""
    path = record_path(out, record["experiment"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any]:
    """A record as written; a missing or corrupt file is a UserError saying how to rewrite it."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{path} is missing or corrupt: rerun the reproduce command that writes it") from None


def section_meta(record: dict[str, Any]) -> dict[str, str]:
    """The report lines every section starts with."""
    return {
        "command": record["command"],
        "versions": f"resnetlab {record['resnetlab_version']}, torch {record['torch_version']}",
        "device": f"{record['device']} ({record['torch_threads']} threads)",
        "dataset": record["dataset"],
        "budget": _budget(record),
        "wall time": f"{record['wall_time_s']:.0f} s for this command; its runs trained for "
        f"{record['runs_wall_time_s']:.0f} s in all (reused runs count where they were first trained)",
    }


def _budget(record: dict[str, Any]) -> str:
    """The budget line: iterations per run, or the finished runs given (:func:`given_record`)."""
    if record.get("given_runs"):
        return (
            f"no nets trained: {len(record['runs'])} finished run(s) given with --runs, each with its "
            f"own length (the iterations column; the paper's is {PAPER_ITERATIONS:,})"
        )
    budget = record["budget"]
    how = f"{budget['iterations']:,} iterations per run" if budget["iterations"] else "no nets trained"
    if budget["minutes"] and budget["iterations"]:
        how += f" (from --budget-minutes {budget['minutes']:g} for the whole reproduction)"
    return f"{how}, batch {record['batch_size']}, {record['seeds']} seed(s)"
