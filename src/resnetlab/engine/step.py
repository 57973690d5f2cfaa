"""One SGD step: forward (optionally under bf16 autocast), loss, backward, update.

Nothing in here reads a value back to the host: the loss and the number of correct predictions
come back as 0-dim tensors on the device, and the trainer reads them only every log interval.
"""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F
from torch import nn


def autocast_context(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``amp == "bf16"``, a no-op otherwise."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is narrower (bf16 logits under autocast), else as it is (float64 stays)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class TrainStep:
    """Run training steps of ``model`` with ``optimizer``.

    ``channels_last`` converts the model once and every batch on the way in; ``compile`` runs the
    forward (and so, through AOTAutograd, the backward) through ``torch.compile``; should compiling
    either fail at the first step (a missing header, an unsupported platform), the step says so on
    stderr and runs eager. The learning rate is whatever the optimizer's param groups hold.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        amp: str | None = None,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
        compile: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.amp = amp
        self.channels_last = channels_last
        self.label_smoothing = label_smoothing
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.compiled = torch.compile(model) if compile else None
        self.compiled_once = False
        self.device = next(model.parameters()).device

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The batch in the memory format chosen for the model.

        Batches may arrive with any strides (the crop-and-flip gather yields channels-last ones);
        fixing the format keeps speed predictable and avoids a heap corruption of torch 2.14's CPU
        convolution backward for 1x1 stride-2 convolutions of few channels on channels-last input.
        """
        return x.contiguous(
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the batch; returns (mean loss, number of correct top-1 predictions)."""
        x = self.prepare(x)
        if self.compiled is None or self.compiled_once:
            net = self.model if self.compiled is None else self.compiled
            loss, logits = self._gradients(net, x, y)
        else:
            loss, logits = self._first_compiled(x, y)
        self.optimizer.step()
        correct = (logits.detach().argmax(1) == y).sum()
        return loss.detach(), correct

    def _gradients(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward through ``net``: the loss and logits, the gradients in place."""
        with autocast_context(self.device, self.amp):
            logits = net(x)
            loss = F.cross_entropy(at_least_fp32(logits), y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, logits

    def _first_compiled(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step's gradients through the compiled net, which compiles the forward there and
        the backward in ``backward()``; where either fails, said once on stderr, eager from then on.
        The weights are untouched either way: the update comes after."""
        try:
            out = self._gradients(self.compiled, x, y)
        except Exception as e:  # inductor's failures have no common base class
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"torch.compile failed ({type(e).__name__}: {first}); training eager", file=sys.stderr)
            self.compiled = None
            return self._gradients(self.model, x, y)
        self.compiled_once = True
        return out

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every param group (a host-side number: no device sync)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
