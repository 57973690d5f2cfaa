"""The run directory: one run at a time (locked), refuse to clobber, reuse a finished identical run,
and describe the environment."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from resnetlab.atomic import atomic_write
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, resolve_checkpoint
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.runlock import RunLock
from resnetlab.errors import UserError

RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", CHECKPOINT_NAME, "summary.json")
RUN_DIRS = ("tensorboard",)
# Fields a request may leave as None or "auto" ("choose for me") while the finished run recorded the
# choice.
AUTO_FIELDS = (
    "precision",
    "memory_format",
    "iterations",
    "log_every",
    "eval_every",
    "eval_limit",
    "checkpoint_every",
    "checkpoint_minutes",
)


def _differences(requested: TrainConfig, stored: dict[str, Any]) -> list[str]:
    """Fields of ``requested`` that a stored config.yaml does not match."""
    return [
        k
        for k, v in requested.identity().items()
        if not (k in AUTO_FIELDS and v in (None, "auto")) and stored.get(k) != v
    ]


def prepare_run_dir(config: TrainConfig, lock: RunLock) -> dict[str, Any] | None:
    """Lock ``config.out`` and make it ready; returns the stored summary when an identical run
    already finished.

    ``lock`` (on ``config.out``) is taken before anything is looked at or deleted, so a live run's
    files are never touched. An existing run (finished with another config, or unfinished) is
    refused unless ``overwrite`` (which deletes only resnetlab's own files) or ``resume`` is set;
    resuming into a directory that holds another run is refused.
    """
    out = config.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    _ensure_writable(out)
    lock.acquire()
    present = [name for name in RUN_FILES + RUN_DIRS if (out / name).exists()]
    if present and config.overwrite:
        for name in present:
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    elif present and config.resume is not None:
        _check_resume_target(config)
    elif present:
        if (out / "summary.json").is_file() and (out / "config.yaml").is_file():
            stored = _read_yaml(out / "config.yaml")
            diff = _differences(config, stored)
            if not diff:
                return read_summary(out, f"rewrite it with --resume {out} or start over with --overwrite")
            raise UserError(
                f"{out} holds a finished run with a different config (differs in {', '.join(diff)}); "
                "use --overwrite to replace it or choose another --out"
            )
        if (out / CHECKPOINT_NAME).is_file():
            raise UserError(
                f"{out} holds an unfinished run; continue it with --resume {out} "
                "or start over with --overwrite"
            )
        raise UserError(
            f"{out} holds the start of a run that wrote no checkpoint; start over with --overwrite"
        )
    _remove_stale_temporaries(out)
    return None


def _remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files of writes that a killed run left unfinished (see resnetlab.atomic).

    Only a writer that died leaves one, and the lock held here means no writer is alive: without
    this, every run killed mid-checkpoint would leave a checkpoint-sized file behind.
    """
    for name in RUN_FILES:
        for tmp in out.glob(f".{name}.*.part"):
            tmp.unlink(missing_ok=True)


def _check_resume_target(config: TrainConfig) -> None:
    """Refuse to resume into an ``--out`` that holds another run: continuing there would replace it."""
    out, source = config.out, resolve_checkpoint(config.resume)
    ckpt = out / CHECKPOINT_NAME
    if (out / "config.yaml").is_file():
        diff = _differences(config, _read_yaml(out / "config.yaml"))
        other = f"another run (differs in {', '.join(diff)})" if diff else None
    else:  # nothing to compare with: only the checkpoint being resumed may be there
        other = f"another run's {CHECKPOINT_NAME}" if ckpt.is_file() and not ckpt.samefile(source) else None
    if other:
        raise UserError(
            f"{out} holds {other}; resuming {source} there would replace it: choose another --out"
        )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a resnetlab config")
    return data


def _ensure_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to the output directory {out}: {exc.strerror or exc}") from None


def write_config(config: TrainConfig) -> None:
    """config.yaml: the resolved TrainConfig in plain types (the recipe included)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write(config.out / "config.yaml", text)


def read_summary(
    out: Path, fix: str = "rerun the command that made this run to rewrite it"
) -> dict[str, Any]:
    """The summary.json of a finished run; a missing, damaged or incomplete one is a one-line
    :class:`UserError` that ends with ``fix``."""
    path = Path(out) / "summary.json"
    try:
        summary = json.loads(path.read_text())
        problem = _summary_problem(summary)
    except (OSError, ValueError) as exc:  # a hand-edited or damaged file (resnetlab writes atomically)
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if problem:
        raise UserError(f"cannot read {path} ({problem}): {fix}")
    return summary


def _summary_problem(summary: Any) -> str | None:
    """What keeps ``summary`` from being one the trainer wrote (the numbers readers rely on), or None."""
    if not isinstance(summary, dict):
        return "not a JSON object"
    final = summary.get("final")
    numbers = {
        "params": summary.get("params"),
        "wall_time_s": summary.get("wall_time_s"),
        "final.top1_error": final.get("top1_error") if isinstance(final, dict) else None,
    }
    bad = [k for k, v in numbers.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    return f"no number {', '.join(bad)}" if bad else None


def read_metrics(out: Path) -> list[dict[str, Any]]:
    """The rows of a run directory's metrics.jsonl; a missing or damaged file is a one-line UserError."""
    path = Path(out) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(
            f"cannot read {path} ({exc.strerror}): rerun the command that made this run"
        ) from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows += [json.loads(line)] if line.strip() else []
        except json.JSONDecodeError:
            raise UserError(
                f"cannot read {path} (damaged at line {number}): delete the run and rerun"
            ) from None
    return rows


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    atomic_write(Path(out) / "summary.json", json.dumps(summary, indent=2) + "\n")


def git_hash() -> str | None:
    """The commit of the resnetlab source tree, or None outside a git checkout (or without git)."""
    here = Path(__file__).resolve().parent
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _program() -> str:
    name = Path(sys.argv[0]).name
    return "resnetlab" if name in ("__main__.py", "resnetlab") else sys.argv[0]


def environment(device_name: str, world_size: int) -> dict[str, Any]:
    """What a result depends on besides the config: versions, device, code commit, command line."""
    from resnetlab import __version__

    return {
        "torch_version": torch.__version__,
        "device": device_name,
        "world_size": world_size,
        "git_hash": git_hash(),
        "command": shlex.join([_program(), *sys.argv[1:]]),
        "resnetlab_version": __version__,
        "hostname": os.uname().nodename if hasattr(os, "uname") else None,
    }
