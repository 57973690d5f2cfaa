"""What training reports: device-side accumulators, metrics.jsonl/csv, console and TensorBoard.

The accumulators live on the training device and are read back only at log intervals, so a
training step never waits for the host.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_write
from resnetlab.engine.distributed import DistContext, wide_float

TRAIN_KEYS = ("kind", "iteration", "epoch", "lr", "train_loss", "train_error", "images_per_s", "time_s")
EVAL_KEYS = (
    "kind", "iteration", "epoch", "split", "top1_error", "top5_error", "loss", "images", "eval_s", "time_s"
)  # fmt: skip
CSV_COLUMNS = tuple(dict.fromkeys(TRAIN_KEYS + EVAL_KEYS))
_NEVER = 2**62  # "no non-finite loss seen" for the min-reduction in FiniteGuard


class Meter:
    """Sums of loss and correct predictions over some steps, kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float32, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.steps = 0
        self.images = 0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        """Add one step (device tensors; no sync)."""
        self.loss += loss
        self.correct += correct
        self.steps += 1
        self.images += images

    def read(self, ctx: DistContext) -> tuple[float, float]:
        """(mean loss per step, top-1 error) over all ranks since the last reset; then reset."""
        wide = wide_float(self.loss.device)
        both = torch.stack([self.loss.to(wide), self.correct.to(wide)])
        ctx.all_reduce(both)
        loss_sum, correct = both.tolist()
        steps, images = max(self.steps, 1), max(self.images * ctx.world_size, 1)
        mean_loss = loss_sum / (steps * ctx.world_size)
        self.loss.zero_()
        self.correct.zero_()
        self.steps = self.images = 0
        return mean_loss, 1.0 - correct / images

    def state_dict(self) -> dict[str, Any]:
        """The running sums (for a resume that logs exactly what an uninterrupted run logs)."""
        return {
            "loss": self.loss.cpu(),
            "correct": self.correct.cpu(),
            "steps": self.steps,
            "images": self.images,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.copy_(state["loss"])
        self.correct.copy_(state["correct"])
        self.steps, self.images = int(state["steps"]), int(state["images"])


class FiniteGuard:
    """Remembers, on the device, the first iteration whose loss was not finite."""

    def __init__(self, device: torch.device, iteration: int) -> None:
        self.counter = torch.tensor(iteration, dtype=torch.int64, device=device)
        self.first_bad = torch.tensor(_NEVER, dtype=torch.int64, device=device)

    def update(self, loss: torch.Tensor) -> None:
        self.counter += 1
        bad_here = torch.where(torch.isfinite(loss), _NEVER, self.counter)
        torch.minimum(self.first_bad, bad_here, out=self.first_bad)

    def first_bad_iteration(self, ctx: DistContext) -> int | None:
        """The first iteration (1-based) with a non-finite loss on any rank, or None."""
        value = ctx.all_reduce(self.first_bad.clone(), op="min").item()
        return None if value == _NEVER else int(value)


class MetricsLog:
    """metrics.jsonl and metrics.csv of a run directory; rows also kept in memory for checkpoints.

    Opening a log rewrites both files from ``rows`` (atomically), which on a resume drops any rows
    a killed run wrote after its last checkpoint. ``out=None`` keeps rows in memory only (ranks > 0).
    """

    def __init__(self, out: Path | None, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows = list(rows or [])
        self.out = out
        if out is not None:
            atomic_write(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows))
            atomic_write(out / "metrics.csv", _csv_text(self.rows, header=True))

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.out is None:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.out / "metrics.csv", "a", newline="") as f:
            f.write(_csv_text([row], header=False))

    def last(self, kind: str) -> dict[str, Any] | None:
        """The latest row of ``kind`` ("train" or "eval"), or None."""
        return next((r for r in reversed(self.rows) if r["kind"] == kind), None)


def _csv_text(rows: list[dict[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class Console:
    """A tqdm bar on a terminal, one line per log interval otherwise; silent when disabled.

    ``label`` starts every line (the net's name in a fleet); ``bar=False`` leaves the bar to another.
    """

    def __init__(self, total: int, start: int, enabled: bool, *, label: str = "", bar: bool = True) -> None:
        self.enabled, self.label = enabled, label
        self.bar = None
        if enabled and bar and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, file=sys.stdout)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def train_row(self, row: dict[str, Any], total: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{100 * row['train_error']:.1f}%")
        else:
            self.print(
                f"iter {row['iteration']}/{total} epoch {row['epoch']:.2f} lr {row['lr']:.4g} "
                f"loss {row['train_loss']:.4f} train err {100 * row['train_error']:.2f}% "
                f"{row['images_per_s']:.0f} img/s"
            )

    def eval_row(self, row: dict[str, Any]) -> None:
        self.print(
            f"eval iter {row['iteration']} {row['split']} top-1 err {100 * row['top1_error']:.2f}% "
            f"top-5 err {100 * row['top5_error']:.2f}% loss {row['loss']:.4f} ({row['images']} images)"
        )

    def print(self, text: str) -> None:
        if not self.enabled:
            return
        text = self.label + text
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoard:
    """TensorBoard event files under ``out/tensorboard`` when tensorboard is installed; else nothing."""

    def __init__(self, out: Path | None) -> None:
        self.writer = None
        if out is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def add(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        prefix = "train" if row["kind"] == "train" else row["split"]
        for key, value in row.items():
            if key not in ("kind", "iteration", "split") and isinstance(value, int | float):
                self.writer.add_scalar(f"{prefix}/{key}", value, row["iteration"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
