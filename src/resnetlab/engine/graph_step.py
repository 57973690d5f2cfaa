"""The training step as one captured CUDA graph: data, forward, backward and update on the device.

A GPU trains a CIFAR ResNet faster than Python can launch its few hundred small kernels, so the
eager step leaves the GPU waiting. Here the whole step (batch gather, crop and flip, normalisation,
forward, backward, SGD update, loss and accuracy) is captured once and replayed with one launch.
It needs nothing from the host but the batch number: the epoch's draws (which images, which crop,
which flip) are written to device tables at the start of each epoch, from the very generators
:class:`~resnetlab.data.loader.TensorBatches` uses, so the batches are those of the eager step.

On a CPU, or when capture fails, the same step runs eagerly; that is how it is tested.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.data.augment import Normalizer, apply_crop_flip
from resnetlab.data.loader import TensorBatches
from resnetlab.engine.static_sgd import StaticSGD
from resnetlab.engine.step import at_least_fp32

WARMUP_STEPS = 3  # eager steps before capture: cuDNN autotuning and the allocator settle first


class EpochTables:
    """The draws of every batch of one training epoch, as device tables (one process only)."""

    def __init__(self, batches: TensorBatches) -> None:
        if not batches.train or batches.world_size != 1:
            raise ValueError("epoch tables hold the training batches of a single process")
        self.batches = batches
        self.steps, self.batch_size = batches.batches_per_epoch, batches.batch_size
        device, slots = batches.device, self.steps * batches.batch_size
        norm = batches.normalizer
        self.normalizer = Normalizer(
            norm.mean.to(device), None if norm.std is None else norm.std.to(device), norm.mode
        )
        self.index = torch.zeros(slots, dtype=torch.int64, device=device)
        self.offsets = torch.zeros(slots, 2, dtype=torch.int64, device=device)
        self.flips = torch.zeros(slots, dtype=torch.bool, device=device)
        self.within = torch.arange(self.batch_size, device=device)
        self.epoch: int | None = None

    def fill(self, epoch: int) -> None:
        """Write the draws of ``epoch`` (a no-op when they are there already)."""
        if epoch == self.epoch:
            return
        order = self.batches.order(epoch)
        draws = [self.batches.draws(epoch, s, order) for s in range(self.steps)]
        self.index.copy_(torch.cat([d.indices for d in draws]))
        if self.batches.augment:
            self.offsets.copy_(torch.cat([d.offsets for d in draws]))
            self.flips.copy_(torch.cat([d.flips for d in draws]))
        self.epoch = epoch

    def gather(self, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` (a 0-dim device tensor) of the filled epoch: (normalised images, labels)."""
        slots = step * self.batch_size + self.within
        idx = self.index[slots]
        x = self.batches.images[idx]
        if self.batches.augment:
            x = apply_crop_flip(x, self.offsets[slots], self.flips[slots], self.batches.pad)
        return self.normalizer(x), self.batches.labels[idx]


class GraphStep:
    """Training steps of ``model`` on batches of ``tables``, captured as a CUDA graph by
    :meth:`capture` (eager until then, and on a CPU). ``step(i)`` trains on batch ``i`` of the
    filled epoch and returns (loss, correct) as 0-dim device tensors that the next step overwrites.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: StaticSGD,
        tables: EpochTables,
        *,
        amp: str | None = None,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        self.model, self.optimizer, self.tables = model, optimizer, tables
        self.amp, self.channels_last, self.label_smoothing = amp, channels_last, label_smoothing
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.device = next(model.parameters()).device
        self.index = torch.zeros((), dtype=torch.int64, device=self.device)
        self.loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None

    def _run(self) -> None:
        x, y = self.tables.gather(self.index)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        # The autocast cache would hold bf16 weight copies made outside the graph; a replay must cast anew.
        with torch.autocast(
            self.device.type, torch.bfloat16, enabled=self.amp == "bf16", cache_enabled=False
        ):
            logits = self.model(x)
            loss = F.cross_entropy(at_least_fp32(logits), y, label_smoothing=self.label_smoothing)
        grads = torch.autograd.grad(loss, self.optimizer.params)
        self.optimizer.update(grads)
        with torch.no_grad():
            self.loss.copy_(loss.detach())
            self.correct.copy_((logits.detach().argmax(1) == y).sum())

    def step(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on batch ``batch`` of the epoch in the tables."""
        self.index.fill_(batch)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._run()
        return self.loss, self.correct

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (a device write; no sync)."""
        self.optimizer.set_lr(lr)

    def capture(self, stream: torch.cuda.Stream) -> None:
        """Warm up on ``stream``, then capture the step there. Weights, BN statistics and momentum
        are put back as they were before the warm-up steps; raises RuntimeError when CUDA refuses."""
        model_state = [t.detach().clone() for t in self.model.state_dict().values()]
        buffers = [b.clone() for b in self.optimizer.buffers]
        try:
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_STEPS):
                    self.step(0)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                self._run()
            self.graph = graph
        finally:
            torch.cuda.synchronize(self.device)
            with torch.no_grad():
                for t, saved in zip(self.model.state_dict().values(), model_state, strict=True):
                    t.copy_(saved)
                for b, saved in zip(self.optimizer.buffers, buffers, strict=True):
                    b.copy_(saved)
            torch.cuda.synchronize(self.device)
