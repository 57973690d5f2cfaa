"""The one path of a study of given trained nets (``reproduce responses --nets``, ``lesion``,
``landscape``), and the report lines such studies share.

:func:`run` resolves the ``--nets`` references (:mod:`~resnetlab.experiments.trained_nets`), picks
the device and numeric mode, measures each net with the study's own function unless a measurement
made with the same net and settings is kept in the output folder
(:mod:`~resnetlab.experiments.net_measurements`), and writes the record: one header for every study,
its settings, the nets' measurements, and the time taken. A study supplies a name, its settings and
``measure(net, bench) -> dict``; nothing else about the path is its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from resnetlab.engine.distributed import select_device
from resnetlab.engine.precision import NumericMode, choose_mode
from resnetlab.experiments import net_measurements, records
from resnetlab.experiments.options import Options
from resnetlab.experiments.trained_nets import TrainedNet, load_nets
from resnetlab.reporting.report import Table


@dataclass(frozen=True)
class Bench:
    """Where and how a study measures each net: its options, device, numeric mode and dataset
    (None: each net's own)."""

    opts: Options
    device: torch.device
    mode: NumericMode
    dataset: str | None

    def say(self, text: str) -> None:
        """Progress on stdout, unless ``--quiet``."""
        if not self.opts.quiet:
            print(text, flush=True)


def run(
    name: str,
    opts: Options,
    refs: tuple[str, ...],
    dataset: str | None,
    settings: dict[str, Any],
    measure: Callable[[TrainedNet, Bench], dict[str, Any]],
    check: Callable[[TrainedNet], None] | None = None,
) -> dict[str, Any]:
    """Measure every net of ``refs`` (``check`` refuses a net before any is measured), keeping each
    measurement under the key of the net, ``settings`` and the numeric mode and reusing those found;
    write and return the record."""
    clock = Clock()
    nets = load_nets(refs)
    for net in nets:
        if check is not None:
            check(net)
    device = select_device(opts.device)
    mode = choose_mode(device, opts.precision)
    bench = Bench(opts, device, mode, dataset)
    fields = {"dataset": dataset, "batch_size": opts.batch_size, **settings}
    key = fields | {"device": device.type, "precision": mode.precision, "memory_format": mode.memory_format}
    measured = net_measurements.measure_each(
        opts.out, name, nets, key, lambda n: measure(n, bench), opts.quiet
    )
    record = records.header(name, device) | {
        "precision": mode.precision,
        "memory_format": mode.memory_format,
        "precision_reason": mode.reason,
        **fields,
        "nets": measured,
    }
    record |= clock.record()
    records.write_record(opts.out, record)
    return record


def _load() -> float | None:
    """The 1-minute load average (runnable threads, this process's included), where the OS has one."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


class Clock:
    """Wall and CPU time of a study, and how busy the machine was when it started (a shared machine
    makes the wall time longer than the work needs)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.load = _load()

    def record(self) -> dict[str, Any]:
        return {
            "wall_time_s": time.perf_counter() - self.wall,
            "cpu_time_s": time.process_time() - self.cpu,
            "load_average_start": self.load,
            "load_average_end": _load(),
        }


def wall_time(record: dict[str, Any]) -> str:
    """'412 s (6.9 min) for this command, CPU time ...', and how busy the machine was: a wall time
    measured on cores shared with other work is longer than the work needs."""
    wall, cpu = record["wall_time_s"], record["cpu_time_s"]
    text = f"{wall:.0f} s ({wall / 60:.1f} min) for this command, CPU time {cpu:.0f} s"
    loads = [
        f"{record[key]:.1f} at the {when}"
        for key, when in (("load_average_start", "start"), ("load_average_end", "end"))
        if record.get(key) is not None
    ]
    if loads:
        text += (
            f"; 1-minute load average {' and '.join(loads)}, this command's own "
            f"{record['torch_threads']} thread(s) included"
        )
    return text


def reused_note(nets: list[dict[str, Any]]) -> str:
    """'; measured earlier and reused: plain-20 (measured 2026-12-06 11:40:02, 69 s)', or '' when
    this command measured every net."""
    reused = [
        f"{n['label']} (measured {n['reused']}, {n['wall_time_s']:.0f} s)" for n in nets if n.get("reused")
    ]
    return f"; measured earlier and reused: {', '.join(reused)}" if reused else ""


def study_meta(record: dict[str, Any], budget: str) -> dict[str, str]:
    """The lines every study's report section starts with."""
    datasets = sorted({n["dataset"] for n in record["nets"]})
    return {
        "command": record["command"],
        "versions": f"resnetlab {record['resnetlab_version']}, torch {record['torch_version']}",
        "device": f"{record['device']} ({record['torch_threads']} threads), {record['precision']} "
        f"({record['precision_reason']})",
        "dataset": ", ".join(datasets),
        "budget": budget,
        "wall time": wall_time(record) + reused_note(record["nets"]),
    }


def origins(nets: list[dict[str, Any]]) -> Table:
    """Where each net's weights came from."""
    rows = [
        [
            n["label"],
            f"`{n['ref']}`",
            f"{n['source']}"
            + (f", {n['iterations']:,} iterations" if n["iterations"] else "")
            + f", on {n['trained_on'] or 'an unnamed dataset'}",
            n["normalization"],
        ]
        for n in nets
    ]
    return Table("Where the weights came from", ["net", "reference", "trained", "normalisation"], rows)
