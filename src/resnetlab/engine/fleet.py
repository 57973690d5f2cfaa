"""The engine's training step for one net or several side by side, eager or as captured CUDA graphs.

A fleet is the nets of one training job. They take the same batches in the same order (the draws
come from the run's seed alone), each with its own optimizer: on a CPU one after another, on a GPU
each on its own CUDA stream, so that the small kernels of different nets overlap. ``resnetlab
train`` is a fleet of one; the reproductions train their plain and residual twins as one fleet.

Two step modes (:func:`choose_step`):
- ``eager``: :class:`~resnetlab.engine.step.TrainStep` on the batches of the data loader.
- ``graph``: :class:`~resnetlab.engine.graph_step.GraphStep`, the whole step from per-epoch device
  tables, captured as a CUDA graph on a GPU (run uncaptured elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from resnetlab.data.loader import TensorBatches
from resnetlab.engine.graph_step import EpochTables, GraphStep
from resnetlab.engine.step import TrainStep
from resnetlab.errors import UserError

Step = TrainStep | GraphStep


@dataclass(frozen=True)
class StepChoice:
    """The step mode a job runs ("eager" or "graph") and why."""

    mode: str
    reason: str


def choose_step(
    requested: str, device: torch.device, batches: Any, *, world_size: int, compile: bool, recompute: bool
) -> StepChoice:
    """The step mode for ``requested`` ("auto", "eager" or "graph").

    auto: a captured graph on CUDA when the training data is held in memory, in one process, with
    neither ``--compile`` nor activation checkpointing (the graph replaces what those do); eager
    otherwise. "graph" elsewhere than on CUDA runs the same table-driven step uncaptured.
    """
    blockers = [
        why
        for why, blocked in (
            ("the training data is streamed, not held in memory", not isinstance(batches, TensorBatches)),
            ("it runs in several processes", world_size > 1),
            ("--compile compiles the eager step", compile),
            ("--checkpoint-activations recomputes in backward", recompute),
        )
        if blocked
    ]
    if requested == "eager":
        return StepChoice("eager", "--step eager as asked")
    if requested == "graph":
        if blockers:
            raise UserError(f"--step graph is not possible here: {blockers[0]}")
        uncaptured = "" if device.type == "cuda" else f"; uncaptured on {device.type} (graphs are CUDA's)"
        return StepChoice("graph", "--step graph as asked" + uncaptured)
    if device.type != "cuda":
        return StepChoice("eager", f"auto: eager on {device.type} (graph capture is CUDA's)")
    if blockers:
        return StepChoice("eager", f"auto: eager, since {blockers[0]}")
    return StepChoice("graph", "auto: one captured CUDA graph per step on CUDA")


class Fleet:
    """The steps of a job's nets and the batches they share. ``tables`` (graph mode) replaces the
    loader's batches by batch numbers into per-epoch device tables."""

    def __init__(self, steps: Sequence[Step], batches: Any, tables: EpochTables | None = None) -> None:
        self.steps = list(steps)
        self.batches, self.tables = batches, tables
        self.streams: list[torch.cuda.Stream] | None = None
        self.batch_size: int = batches.batch_size

    @property
    def batches_per_epoch(self) -> int:
        return self.batches.batches_per_epoch

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Any, ...]]:
        """The arguments of each step of ``epoch`` from batch ``start`` on: (images, labels) eagerly,
        (batch number,) with tables."""
        if self.tables is None:
            yield from self.batches.epoch(epoch, start)
            return
        self.tables.fill(epoch)  # enqueued after every step so far: the streams rejoin after each step
        for step in range(start, self.tables.steps):
            yield (step,)

    def step_all(self, batch: tuple[Any, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One step of every net on ``batch``; each returns (loss, correct) as device tensors.

        With streams, each net's step waits for what the current stream did before (new learning
        rates, table writes) and the current stream waits for all of them, so whatever is enqueued
        next (meters, evaluation, checkpoints) sees finished steps; the nets overlap in between.
        """
        if self.streams is None:
            return [step.step(*batch) for step in self.steps]
        current = torch.cuda.current_stream()
        out = []
        for step, stream in zip(self.steps, self.streams, strict=True):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                out.append(step.step(*batch))
        for stream in self.streams:
            current.wait_stream(stream)
        return out

    def capture(self) -> str | None:
        """Capture every graph step (after warm-up steps that are undone); returns None, or why the
        job runs uncaptured. A failed capture falls back to the eager form of the same step."""
        graphs = [s for s in self.steps if isinstance(s, GraphStep)]
        if not graphs or self.tables is None:
            return None
        device = graphs[0].device
        if device.type != "cuda":
            return f"uncaptured on {device.type}"
        self.tables.fill(self.tables.epoch or 0)
        streams = [torch.cuda.Stream(device) for _ in graphs]
        try:
            for step, stream in zip(graphs, streams, strict=True):
                step.capture(stream)
        except RuntimeError as exc:
            for step in graphs:
                step.graph = None
            return f"capture failed, eager: {str(exc).splitlines()[0]}"
        # One net replays on the current stream; several overlap on their own.
        self.streams = streams if len(graphs) > 1 else None
        return None


def build_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tables: EpochTables | None,
    *,
    amp: str | None,
    channels_last: bool,
    label_smoothing: float,
    compile: bool,
) -> Step:
    """The step of one net: a :class:`GraphStep` on ``tables`` when given, else eager."""
    if tables is None:
        return TrainStep(
            model,
            optimizer,
            amp=amp,
            channels_last=channels_last,
            label_smoothing=label_smoothing,
            compile=compile,
        )
    return GraphStep(
        model, optimizer, tables, amp=amp, channels_last=channels_last, label_smoothing=label_smoothing
    )
