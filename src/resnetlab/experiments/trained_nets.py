"""What the studies of given trained nets share (``reproduce lesion`` and ``reproduce landscape``):
loading each weights reference with its own preprocessing, its test or training images, twin pairs
(plain and residual nets trained alike at one depth), the numeric mode of the fast passes, the time
taken, and the report lines every such study starts with.

Nets are described as :func:`resnetlab.experiments.responses_nets.describe` describes them, so
the three studies of trained nets label and pair nets alike.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import EVAL_ORDER_SEED, seeded_generator
from resnetlab.engine.distributed import device_name
from resnetlab.engine.precision import NumericMode
from resnetlab.engine.run_data import eval_sets
from resnetlab.engine.rundir import environment
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.evaluation import checkpoint_batches
from resnetlab.experiments.responses_nets import describe, unique_labels
from resnetlab.models import ResNet
from resnetlab.reporting.report import Table
from resnetlab.weights import load_weights

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainedNet:
    """A loaded weights reference: its description (a record entry), checkpoint and network."""

    info: dict[str, Any]
    ckpt: dict[str, Any]
    model: ResNet


def load_nets(refs: tuple[str, ...]) -> list[TrainedNet]:
    """Every reference loaded (each a UserError if it cannot be), labels made unique."""
    nets = []
    for ref in refs:
        ckpt = load_weights(ref)
        info = describe(ref, ckpt) | {"classes": len(ckpt["classes"])}
        nets.append(TrainedNet(info, ckpt, model_from_checkpoint(ckpt)))
    unique_labels([n.info for n in nets])
    return nets


def prepare(net: TrainedNet, device: torch.device, mode: NumericMode) -> ResNet:
    """The net on ``device`` in eval mode and ``mode``'s memory format."""
    model = net.model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if mode.channels_last else model


def _layout(batches: list[Batch], mode: NumericMode) -> list[Batch]:
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    return [(x.contiguous(memory_format=fmt), y) for x, y in batches]


def test_batches(
    net: TrainedNet, dataset: str | None, data_dir: str | None, batch_size: int, device: torch.device
):
    """The test split of ``dataset`` (default: the net's own) as the net expects it, in a fixed
    shuffled order (any prefix is a fair sample)."""
    split, batches = checkpoint_batches(
        net.ckpt, dataset=dataset, data_dir=data_dir, batch_size=batch_size, device=device
    )
    if split != "test":
        raise UserError(f"{net.info['ref']}: the dataset has no test split to measure on (only {split})")
    return batches


def training_subset(
    net: TrainedNet,
    dataset: str | None,
    data_dir: str | None,
    images: int,
    batch_size: int,
    device: torch.device,
    mode: NumericMode,
) -> list[Batch]:
    """``images`` training images (unaugmented, the net's normalisation) as a list of batches on
    ``device``: the same images for every net of the same dataset, drawn in a fixed random order
    (image folders are sorted by class). Images a run held out as validation are not used."""
    config = net.ckpt.get("config", {})
    dataset = dataset or config.get("dataset")
    if not dataset:
        raise UserError(f"{net.info['ref']}: the weights do not name their dataset: give --dataset")
    splits = load_dataset(dataset, data_dir or config.get("data_dir"))
    if splits.train is None:
        raise UserError(f"dataset {dataset} has no in-memory training split to scan the loss on")
    if splits.classes != list(net.ckpt["classes"]):
        raise UserError(f"dataset {dataset} has other classes than {net.info['ref']} was trained on")
    val_split = config.get("val_split", 0) if dataset == config.get("dataset") else 0
    train, _ = eval_sets(splits, val_split)
    if list(train.images.shape[2:]) != list(net.ckpt["image_size"]):
        raise UserError(
            f"the training images of {dataset} are {tuple(train.images.shape[2:])}, but "
            f"{net.info['ref']} expects {tuple(net.ckpt['image_size'])}"
        )
    if images > len(train):
        raise UserError(f"--images {images} is more than the {len(train)} training images of {dataset}")
    order = torch.randperm(len(train), generator=seeded_generator(EVAL_ORDER_SEED))[:images]
    subset = train.subset(order)
    normalizer = Normalizer.from_state_dict(net.ckpt["normalizer"])
    batches = [
        (normalizer(x.to(device)), y.to(device))
        for x, y in zip(subset.images.split(batch_size), subset.labels.split(batch_size), strict=True)
    ]
    return _layout(batches, mode)


def twins(nets: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(plain, residual) pairs of the same depth trained alike (same source and iteration count)."""
    return [
        (p, r)
        for p, r in itertools.product(nets, nets)
        if not p["residual"]
        and r["residual"]
        and p["depth"] == r["depth"]
        and (p["source"], p["iterations"]) == (r["source"], r["iterations"])
    ]


def deeper(nets: list[dict[str, Any]], residual: bool) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(shallower, deeper) pairs of nets of one kind trained alike, for the trend with depth."""
    kind = sorted((n for n in nets if n["residual"] == residual), key=lambda n: n["depth"])
    return [
        (a, b)
        for a, b in itertools.combinations(kind, 2)
        if a["depth"] < b["depth"] and (a["source"], a["iterations"]) == (b["source"], b["iterations"])
    ]


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


def base_record(experiment: str, device: torch.device, mode: NumericMode, **fields: Any) -> dict[str, Any]:
    """What a study's record holds besides its measurements."""
    return {
        "experiment": experiment,
        **environment(device_name(device), 1),
        "torch_threads": torch.get_num_threads(),
        "precision": mode.precision,
        "memory_format": mode.memory_format,
        "precision_reason": mode.reason,
        **fields,
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
