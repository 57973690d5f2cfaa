"""Releasing trained weights: safetensors plus a config JSON, or an ONNX graph.

The config JSON holds everything needed to use the weights without resnetlab's training code:
``ResNet(**config["model_config"])`` (or ``create_model(config["model_name"], **config["model_config"])``)
rebuilds the network, ``classes`` names its outputs and ``normalizer``/``image_size`` say how to
prepare an image (uint8 RGB / 255, minus ``mean``, divided by ``std`` when present).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_path
from resnetlab.engine.checkpoint import atomic_write, atomic_write_text
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.models import ResNet

FORMATS = ("safetensors", "onnx")
CONFIG_FORMAT = "resnetlab-export-1"


def export_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able description of a checkpoint's network, classes and preprocessing."""
    norm = ckpt["normalizer"]
    return {
        "format": CONFIG_FORMAT,
        "model_name": ckpt["model_name"],
        "model_config": ckpt["model_config"],
        "classes": list(ckpt["classes"]),
        "image_size": list(ckpt["image_size"]),
        "normalizer": {
            "mode": norm["mode"],
            "mean": norm["mean"].tolist(),
            "std": None if norm["std"] is None else norm["std"].tolist(),
        },
        "dataset": ckpt.get("config", {}).get("dataset"),
        "iteration": ckpt.get("iteration"),
    }


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the directory of {path}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"cannot write to {path.parent}: permission denied")


def export_safetensors(ckpt: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the weights to ``out`` (.safetensors) and the config to ``out`` with a .json suffix."""
    from safetensors.torch import save

    out = Path(out)
    model_from_checkpoint(ckpt)  # refuse to release weights that do not fit the config shipped with them
    _ensure_parent(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt["model"].items()}
    blob = save(tensors, metadata={"format": "pt", "model_name": ckpt["model_name"]})
    config_path = out.with_suffix(".json")
    try:
        atomic_write(out, lambda f: f.write(blob))
        atomic_write_text(config_path, json.dumps(export_config(ckpt), indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out, config_path


def load_safetensors(weights: Path, config: Path | None = None) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild an exported network: (model in eval mode, its config JSON)."""
    from safetensors.torch import load_file

    weights = Path(weights)
    config_path = Path(config) if config else weights.with_suffix(".json")
    meta = json.loads(config_path.read_text())
    model = ResNet(**meta["model_config"])
    model.load_state_dict(load_file(weights))
    return model.eval(), meta


def export_onnx(ckpt: dict[str, Any], out: Path) -> Path:
    """An ONNX graph (input ``images``: normalised float (N, 3, H, W), any N; output ``logits``).

    The config JSON of :func:`export_config` is embedded as the model's ``resnetlab_config``
    metadata, so the file alone says how to prepare its input.
    """
    out = Path(out)
    _ensure_parent(out)
    model = model_from_checkpoint(ckpt)
    h, w = ckpt["image_size"]
    example = torch.zeros(2, model.config["in_channels"], h, w)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        input_names=["images"],
        output_names=["logits"],
        external_data=False,
        verbose=False,
    )
    program.model.metadata_props["resnetlab_config"] = json.dumps(export_config(ckpt))
    with atomic_path(out) as tmp:
        program.save(str(tmp))
    return out
