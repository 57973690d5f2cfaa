"""Releasing trained weights: safetensors plus a config JSON, or an ONNX graph.

The config JSON holds everything needed to use the weights without resnetlab's training code:
``ResNet(**config["model_config"])`` (or ``build_model(config["model_name"], **config["model_config"])``)
rebuilds the network, ``classes`` names its outputs and ``normalizer``/``image_size`` say how to
prepare an image (uint8 RGB / 255, minus ``mean``, divided by ``std`` when present), and
``provenance`` (when the weights were converted or published by someone) where they come from and
under which licence. :func:`checkpoint_from_export` reads the pair back into the checkpoint-like
dict every command consumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_path, atomic_write
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError, require_extra
from resnetlab.models import ResNet

FORMATS = ("safetensors", "onnx")
ONNX_MODULES = ("onnx", "onnxscript")  # what torch's ONNX exporter imports (the [onnx] extra)
CONFIG_FORMAT = "resnetlab-export-1"
_CONFIG_KEYS = ("model_name", "model_config", "classes", "image_size", "normalizer")


def export_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able description of a checkpoint's network, classes and preprocessing."""
    return {
        "format": CONFIG_FORMAT,
        "model_name": ckpt["model_name"],
        "model_config": ckpt["model_config"],
        "classes": list(ckpt["classes"]),
        "image_size": list(ckpt["image_size"]),
        "normalizer": _normalizer(ckpt["normalizer"], torch.Tensor.tolist),
        "dataset": ckpt.get("config", {}).get("dataset"),
        "iteration": ckpt.get("iteration"),
    } | ({"provenance": ckpt["provenance"]} if ckpt.get("provenance") else {})


def _normalizer(norm: dict[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any]:
    """A normaliser state with its statistics passed through ``convert`` (to lists or to tensors)."""
    std = norm["std"]
    return {"mode": norm["mode"], "mean": convert(norm["mean"]), "std": None if std is None else convert(std)}


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
        atomic_write(out, blob)
        atomic_write(config_path, json.dumps(export_config(ckpt), indent=1) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out, config_path


def checkpoint_from_export(weights: Path) -> dict[str, Any]:
    """The checkpoint-like dict (see ``engine.checkpoint.REQUIRED_KEYS``) of ``NAME.safetensors``
    and the ``NAME.json`` beside it; every way the pair can be wrong is a one-line UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(weights)
    config_path = weights.with_suffix(".json")
    if not config_path.is_file():
        raise UserError(f"{weights} has no {config_path.name} beside it (export writes the two together)")
    try:
        meta = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{config_path} is not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("format") != CONFIG_FORMAT:
        raise UserError(f"{config_path} is not a resnetlab export config (format is not {CONFIG_FORMAT})")
    missing = [k for k in _CONFIG_KEYS if k not in meta]
    if missing:
        raise UserError(f"{config_path} is incomplete (missing {', '.join(missing)})")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError) as exc:
        detail = str(exc).splitlines()[0]
        raise UserError(f"{weights} is not a readable safetensors file ({detail})") from None
    try:
        return _checkpoint(meta, tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{config_path} has a malformed entry ({type(exc).__name__}: {exc})") from None


def _checkpoint(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    ckpt = {
        "model": tensors,
        "model_name": meta["model_name"],
        "model_config": meta["model_config"],
        "classes": list(meta["classes"]),
        "image_size": list(meta["image_size"]),
        "normalizer": _normalizer(meta["normalizer"], torch.tensor),
        "config": {"dataset": meta.get("dataset")},
        "iteration": meta.get("iteration"),
    }
    return ckpt | ({"provenance": meta["provenance"]} if meta.get("provenance") else {})


def load_safetensors(weights: Path) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild an exported network: (model in eval mode, its config JSON)."""
    weights = Path(weights)
    model = model_from_checkpoint(checkpoint_from_export(weights))
    return model, json.loads(weights.with_suffix(".json").read_text())


def export_onnx(ckpt: dict[str, Any], out: Path) -> Path:
    """An ONNX graph (input ``images``: normalised float (N, 3, H, W), any N; output ``logits``).

    The config JSON of :func:`export_config` is embedded as the model's ``resnetlab_config``
    metadata, so the file alone says how to prepare its input. Needs the ``[onnx]`` extra.
    """
    for module in ONNX_MODULES:
        require_extra(module, "onnx", "ONNX export")
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
