"""Given trained nets, as every study of them takes them (``reproduce responses --nets``, ``lesion``,
``landscape``): the ``--nets`` references parsed and loaded, each net described and labelled, its own
preprocessing, its test split or a fixed subset of its training images, and twin pairs (plain and
residual nets trained alike at one depth). :mod:`~resnetlab.experiments.studies` runs a study on them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import EVAL_ORDER_SEED, seeded_generator
from resnetlab.engine.precision import NumericMode
from resnetlab.engine.run_data import eval_sets
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.evaluation import checkpoint_batches
from resnetlab.models import ResNet
from resnetlab.weights import load_weights

Batch = tuple[torch.Tensor, torch.Tensor]
OURS = "resnetlab"  # the source of weights trained by this library (no provenance in the file)


def parse_refs(text: str) -> tuple[str, ...]:
    """The references of a ``--nets REF,REF,...`` value; none is a UserError."""
    refs = tuple(r.strip() for r in text.split(",") if r.strip())
    if not refs:
        raise UserError(f"--nets needs comma-separated weights references, got {text!r}")
    return refs


def depth_of(config: dict[str, Any]) -> int:
    """Weighted layers of a net as the paper counts them: stem conv, the blocks' convs, the fc."""
    per_block = 3 if config.get("block") == "bottleneck" else 2
    return 2 + per_block * sum(config["layers"])


def describe(ref: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a record says about one net besides its measurement: reference, kind and provenance."""
    config = ckpt["model_config"]
    residual = bool(config.get("residual", True))
    provenance = ckpt.get("provenance") or {}
    source = provenance.get("converted_from") or provenance.get("publisher") or OURS
    depth = depth_of(config)
    label = f"{'ResNet' if residual else 'plain'}-{depth}" + ("" if source == OURS else f" ({source})")
    return {
        "ref": ref,
        "origin": ckpt["origin"],
        "label": label,
        "model_name": ckpt["model_name"],
        "depth": depth,
        "residual": residual,
        "source": source,
        "iterations": ckpt.get("iteration"),
        "trained_on": ckpt.get("config", {}).get("dataset"),
        "provenance": provenance or None,
        "normalization": ckpt["normalizer"]["mode"],
        "classes": len(ckpt["classes"]),
    }


def unique_labels(nets: list[dict[str, Any]]) -> None:
    """Nets that would share a label get their iteration counts added where those tell them
    apart, else a number."""
    same: dict[str, list[dict[str, Any]]] = {}
    for n in nets:
        same.setdefault(n["label"], []).append(n)
    for label, group in same.items():
        if len(group) < 2:
            continue
        counts = [n["iterations"] for n in group]
        by_count = None not in counts and len(set(counts)) == len(counts)
        for i, n in enumerate(group, 1):
            n["label"] = f"{label} ({n['iterations']:,} it)" if by_count else f"{label} #{i}"


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
        nets.append(TrainedNet(describe(ref, ckpt), ckpt, model_from_checkpoint(ckpt)))
    unique_labels([n.info for n in nets])
    return nets


def prepare(net: TrainedNet, device: torch.device, mode: NumericMode) -> ResNet:
    """The net on ``device`` in eval mode and ``mode``'s memory format."""
    model = net.model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if mode.channels_last else model


def _layout(batches: list[Batch], mode: NumericMode) -> list[Batch]:
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    return [(x.contiguous(memory_format=fmt), y) for x, y in batches]


class InLayout:
    """Batches that can be iterated again and again, each in ``mode``'s memory format."""

    def __init__(self, batches: Any, mode: NumericMode) -> None:
        self.batches = batches
        self.format = torch.channels_last if mode.channels_last else torch.contiguous_format

    def __iter__(self) -> Iterator[Batch]:
        return ((x.contiguous(memory_format=self.format), y) for x, y in self.batches)


def test_batches(
    net: TrainedNet,
    dataset: str | None,
    data_dir: str | None,
    batch_size: int,
    device: torch.device,
    mode: NumericMode,
) -> InLayout:
    """The test split of ``dataset`` (default: the net's own) as the net expects it, in a fixed
    shuffled order (any prefix is a fair sample), in ``mode``'s memory format."""
    split, batches = checkpoint_batches(
        net.ckpt, dataset=dataset, data_dir=data_dir, batch_size=batch_size, device=device
    )
    if split != "test":
        raise UserError(f"{net.info['ref']}: the dataset has no test split to measure on (only {split})")
    return InLayout(batches, mode)


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
