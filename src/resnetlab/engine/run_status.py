"""Where a training run stands, read from its directory alone (`resnetlab runs`).

A run is *finished* when its summary.json is there, *training* while a live process holds its
directory's lock, *paused* while that process is stopped (SIGSTOP or Ctrl-Z, where Linux's /proc
tells), *stopped* when it has metrics or a checkpoint but no live holder (``--resume`` continues
it), and *not started* otherwise. The rate is the median of the images/s the trainer logged over
its last few intervals, so a pause or a slow start does not skew it, and the time left adds the
evaluations still to come at their measured cost.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from resnetlab.engine.checkpoint import CHECKPOINT_NAME
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.rundir import RUN_FILES, read_metrics, read_summary
from resnetlab.engine.runlock import lock_holder
from resnetlab.errors import UserError

RATE_INTERVALS = 10  # the last logged intervals whose median images/s is the run's rate
FINAL_FRACTION = 0.1  # a finished run's training error: the mean over its last tenth


@dataclass(frozen=True)
class RunStatus:
    """One run directory's state and progress; errors are fractions, times seconds, None unknown."""

    path: str
    model: str | None
    dataset: str | None
    recipe: str | None
    state: str  # "finished", "training", "paused", "stopped" or "not started"
    pid: str | None  # the live holder's, while training or paused
    iteration: int  # the last logged iteration
    total: int | None  # None while a --budget-minutes run has not fixed its length
    epoch: float | None
    lr: float | None
    train_error: float | None  # of the last logged interval; of the last tenth once finished
    test_error: float | None  # the latest evaluation's; a finished run's final one, on the whole split
    test_iteration: int | None
    best_test_error: float | None
    best_test_iteration: int | None
    eval_images: int | None
    images_per_s: float | None
    seconds_left: float | None  # steps at the rate, plus the evaluations to come
    evaluations_left: int | None
    trained_s: float | None  # training time the run has logged, resumes included
    checkpoint_age_s: float | None

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values."""
        return asdict(self)


def final_train_error(rows: list[dict[str, Any]], fraction: float = FINAL_FRACTION) -> float:
    """Mean training error over the log intervals of the last ``fraction`` of the iterations."""
    train_rows = [r for r in rows if r["kind"] == "train"]
    if not train_rows:
        raise ValueError("no training rows")
    last = train_rows[-1]["iteration"]
    tail = [r["train_error"] for r in train_rows if r["iteration"] > last * (1 - fraction)]
    return statistics.fmean(tail or [train_rows[-1]["train_error"]])


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding any of a run's files."""
    return path.is_dir() and any((path / name).is_file() for name in RUN_FILES)


def find_runs(paths: list[Path]) -> list[Path]:
    """Each path that is a run directory, else the run directories directly in it or in its
    ``runs/`` (where `reproduce --out` keeps them), sorted; a path with none is a UserError."""
    found: list[Path] = []
    for path in paths:
        if is_run_dir(path):
            found.append(path)
            continue
        if not path.exists():
            raise UserError(f"{path} does not exist")
        inside = sorted(
            d for base in (path, path / "runs") if base.is_dir() for d in base.iterdir() if is_run_dir(d)
        )
        if not inside:
            raise UserError(f"{path} is neither a run directory nor a folder of run directories")
        found += inside
    return found


def _config(run: Path) -> TrainConfig | None:
    """The run's config.yaml as a TrainConfig; None before the run wrote one."""
    path = run / "config.yaml"
    if not path.is_file():
        return None
    try:
        return TrainConfig.from_dict(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, TypeError, ValueError, UserError) as exc:
        raise UserError(f"cannot read {path} ({str(exc).splitlines()[0]}): is it a resnetlab run?") from None


def _stopped(pid: str) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, Ctrl-Z), where /proc says so (Linux); else False."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rpartition(")")[2].split()[:1] in (["T"], ["t"])


def _evaluations_between(done: int, total: int, every: int | None) -> int:
    """Evaluations after iteration ``done`` up to ``total``: every ``every`` iterations and the last."""
    if not every:
        return 1 if done < total else 0
    periodic = total // every - done // every
    return periodic + (1 if total % every and done < total else 0)


_NEEDS = {"train": ("iteration", "train_error"), "eval": ("iteration", "top1_error")}


def checked_rows(run: Path) -> list[dict[str, Any]]:
    """The run's metrics rows, each checked to hold what the status reads (a UserError if not)."""
    rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    for number, row in enumerate(rows, 1):
        needs = _NEEDS.get(row.get("kind")) if isinstance(row, dict) else None
        if needs is None or not all(isinstance(row.get(k), int | float) for k in needs):
            raise UserError(
                f"cannot read {run / 'metrics.jsonl'} (row {number} is not a metrics row "
                "resnetlab wrote): delete the run and rerun"
            )
    return rows


def run_status(run: Path) -> RunStatus:
    """The state and progress of the run in ``run`` (see the module docstring)."""
    run = Path(run)
    config = _config(run)
    rows = checked_rows(run)
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    finished = (run / "summary.json").is_file()
    summary = read_summary(run) if finished else None
    pid = None if finished else lock_holder(run)
    if finished:
        state = "finished"
    elif pid is not None:
        state = "paused" if _stopped(pid) else "training"
    elif rows or (run / CHECKPOINT_NAME).is_file():
        state = "stopped"
    else:
        state = "not started"

    last = rows[-1] if rows else {}
    iteration = max((r["iteration"] for r in rows), default=0)
    total = config.total_iterations() if config else None
    if summary is not None:
        total = summary.get("iterations", total)
    best = min(evals, key=lambda r: r["top1_error"]) if evals else None
    rates = [
        r["images_per_s"] for r in train[-RATE_INTERVALS:] if isinstance(r.get("images_per_s"), int | float)
    ]
    rate = statistics.median(rates) if rates else None

    seconds_left = evaluations_left = None
    if not finished and total is not None and config is not None and rate:
        evaluations_left = _evaluations_between(iteration, total, config.eval_every)
        eval_times = [r["eval_s"] for r in evals if "eval_s" in r]  # older runs did not time them
        eval_s = statistics.median(eval_times) if eval_times else 0.0
        steps_s = (total - iteration) * config.recipe.batch_size / rate
        seconds_left = steps_s + evaluations_left * eval_s

    checkpoint = run / CHECKPOINT_NAME
    age = time.time() - checkpoint.stat().st_mtime if checkpoint.is_file() else None
    if summary is not None:
        final = summary["final"]
        test_error = float(final.get("test_top1_error", final["top1_error"]))
        train_error = final_train_error(rows) if train else None
    else:
        test_error = evals[-1]["top1_error"] if evals else None
        train_error = train[-1]["train_error"] if train else None
    return RunStatus(
        path=str(run),
        model=config.model if config else None,
        dataset=config.dataset if config else None,
        recipe=config.recipe.name if config else None,
        state=state,
        pid=pid,
        iteration=iteration,
        total=total,
        epoch=last.get("epoch"),
        lr=train[-1]["lr"] if train else None,
        train_error=train_error,
        test_error=test_error,
        test_iteration=evals[-1]["iteration"] if evals else None,
        best_test_error=best["top1_error"] if best else None,
        best_test_iteration=best["iteration"] if best else None,
        eval_images=evals[-1].get("images") if evals else None,
        images_per_s=rate,
        seconds_left=seconds_left,
        evaluations_left=evaluations_left,
        trained_s=last.get("time_s"),
        checkpoint_age_s=age,
    )


def duration(seconds: float) -> str:
    """``seconds`` as the one or two largest units: "45 s", "12 min", "3 h 20 min", "2 d 5 h"."""
    s = max(0, math.floor(seconds))
    if s < 60:
        return f"{s} s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 3600:
        return f"{minutes} min"
    if s < 86400:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def describe(status: RunStatus) -> list[str]:
    """The status as a few lines of text, first line the run and its state."""
    s = status
    what = ", ".join(x for x in (s.model, s.recipe and f"{s.recipe} on {s.dataset}") if x)
    state = f"{s.state} (pid {s.pid})" if s.pid is not None else s.state
    lines = [f"{s.path}: {what or 'no config.yaml yet'}; {state}"]
    if s.state == "not started":
        return lines
    of = f" of {s.total:,} ({100 * s.iteration / s.total:.1f}%)" if s.total else ""
    where = f"  iteration {s.iteration:,}{of}"
    if s.epoch is not None:
        where += f", epoch {s.epoch:.1f}"
    if s.lr is not None and s.state != "finished":
        where += f", lr {s.lr:g}"
    if s.trained_s is not None:
        where += f"; trained {duration(s.trained_s)}"
    lines.append(where)
    errors = []
    if s.train_error is not None:
        span = (
            f"last {int(100 * FINAL_FRACTION)}% of iterations" if s.state == "finished" else "last interval"
        )
        errors.append(f"training error {_percent(s.train_error)} ({span})")
    if s.state == "finished" and s.test_error is not None:
        errors.append(f"final test error {_percent(s.test_error)}")
    elif s.test_error is not None:
        images = f" on {s.eval_images:,} images" if s.eval_images else ""
        errors.append(f"test error {_percent(s.test_error)} at {s.test_iteration:,}{images}")
        if s.best_test_iteration != s.test_iteration and s.best_test_error is not None:
            errors.append(f"best {_percent(s.best_test_error)} at {s.best_test_iteration:,}")
    if errors:
        lines.append("  " + "; ".join(errors))
    if s.state != "finished":
        pace = []
        if s.images_per_s:
            pace.append(f"{s.images_per_s:,.0f} img/s (median of the last {RATE_INTERVALS} intervals)")
        if s.seconds_left is not None:
            n = s.evaluations_left or 0
            evals = f", {n} evaluation{'s' if n > 1 else ''} included" if n else ""
            pace.append(f"about {duration(s.seconds_left)} of training left{evals}")
        if s.checkpoint_age_s is not None:
            pace.append(f"checkpoint written {duration(s.checkpoint_age_s)} ago")
        if pace:
            lines.append("  " + "; ".join(pace))
    if s.state == "stopped":
        lines.append(f"  continue it: resnetlab train --resume {s.path}")
    return lines
