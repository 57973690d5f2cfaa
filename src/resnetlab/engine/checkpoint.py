"""Checkpoints of plain types, written atomically and read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so loading it never runs
code from the file: a checkpoint that holds any other pickled object is refused, not executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_open
from resnetlab.errors import UserError

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
REQUIRED_KEYS = ("model", "model_name", "model_config", "classes", "normalizer", "image_size")


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError ``exc`` is or was raised from (torch.save wraps a failed write in a RuntimeError)."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomically save ``state`` (plain types only) with the format version added.

    A write that fails (disk full, file too large, no permission) is a :class:`UserError`; the file
    at ``path`` is then the one that was there before, if any.
    """
    try:
        with atomic_open(path) as f:
            torch.save({**state, "format_version": FORMAT_VERSION}, f)
    except (OSError, RuntimeError) as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        raise UserError(
            f"cannot write the checkpoint {path}: {cause.strerror or cause}; the checkpoint there before, "
            "if any, is unchanged"
        ) from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoint.pt``; a missing one is a UserError."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise UserError(f"run directory {path} has no {CHECKPOINT_NAME} to resume from or evaluate")
        return path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist (give a checkpoint file or a run directory)")
    return path


def load_plain(path: Path, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain types; every failure is a one-line UserError.

    ``what`` names the file in messages ("checkpoint", "akamaster checkpoint", ...).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):
            raise UserError(
                f"refusing to load {path}: it contains pickled Python objects, not only tensors and plain "
                "types, and loading them could run arbitrary code"
            ) from None
        raise UserError(f"{what} {path} is corrupt (unreadable pickle data)") from None
    except Exception as exc:  # truncated zips surface as OSError, KeyError, EOFError, RuntimeError...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{what} {path} is truncated or corrupt ({detail})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a resnetlab checkpoint safely; every way it can be wrong is a one-line UserError."""
    path = resolve_checkpoint(path)
    state = load_plain(path, "checkpoint", map_location)
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a resnetlab checkpoint (it holds a {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        hint = "; `resnetlab convert` reads other projects' files" if "state_dict" in state else ""
        raise UserError(f"{path} is not a resnetlab checkpoint (missing {', '.join(missing)}){hint}")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer resnetlab (format {state['format_version']})")
    return state


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and, if used, CUDA) as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
