"""Each net's measurement in a study of trained nets, kept in the output folder as soon as it is made.

``reproduce lesion`` and ``reproduce landscape`` measure one net after another, and a landscape takes
many minutes per net. Each measurement is written to ``OUT/<study>-nets/<net sha256>.json`` the
moment it is made, with what it depends on: the net (a hash of its architecture, normalisation and
every tensor), the numeric mode and the study's settings. The same command run again, or with more
nets, reuses what it finds under the same key and measures the rest; anything else is measured
again. The record names what it reused and when that was measured, so a report's wall time stays
true.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_write
from resnetlab.experiments.trained_nets import TrainedNet


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return f"{t.dtype}|{tuple(t.shape)}|".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes()


def net_sha256(net: TrainedNet) -> str:
    """A hash of all that decides what the net computes: its architecture (the model config: a plain
    twin has the very tensors of its ResNet), its input normalisation, its classes and every
    parameter and buffer."""
    digest = hashlib.sha256()
    digest.update(json.dumps(net.model.config, sort_keys=True, default=str).encode())
    digest.update(json.dumps(list(net.ckpt["classes"])).encode())
    for name, value in sorted(net.ckpt.get("normalizer", {}).items()):
        value_bytes = _tensor_bytes(value) if isinstance(value, torch.Tensor) else repr(value).encode()
        digest.update(name.encode() + value_bytes)
    for name, tensor in sorted(net.model.state_dict().items()):
        digest.update(name.encode() + _tensor_bytes(tensor))
    return digest.hexdigest()


def _stored(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The measurement kept at ``path`` if it was made under ``key``; a missing, unreadable or
    other file is measured again (it is ours, not the user's)."""
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != key or not isinstance(kept.get("measurement"), dict):
        return None
    return kept


def measure_each(
    out: Path,
    study: str,
    nets: list[TrainedNet],
    settings: dict[str, Any],
    measure: Callable[[TrainedNet], dict[str, Any]],
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """``measure(net)`` for every net, except those already measured in ``out`` with the same
    weights and ``settings``: their kept measurement is used, marked ``reused`` with the time it was
    measured. Each new measurement is kept before the next net starts."""
    folder = out / f"{study}-nets"
    results = []
    for net in nets:
        sha = net_sha256(net)
        key = {"study": study, "net_sha256": sha, "settings": settings}
        path = folder / f"{sha}.json"
        kept = _stored(path, key)
        if kept is not None:
            if not quiet:
                print(f"== {net.info['label']}: reused, measured {kept['measured_at']}", flush=True)
            results.append(kept["measurement"] | net.info | {"reused": kept["measured_at"]})
            continue
        measurement = measure(net)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        atomic_write(path, json.dumps({"key": key, "measured_at": stamp, "measurement": measurement}) + "\n")
        results.append(measurement)
    return results
