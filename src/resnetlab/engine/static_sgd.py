"""torch's SGD with its state in fixed device tensors, so that a captured CUDA graph can run the update.

A graph replays the memory addresses it was captured with and cannot read a Python number that
changes, so the learning rate lives in a 0-dim tensor and the momentum buffers are created once,
zeroed, before the first step (``buf = 0.9 * 0 + g`` is exactly torch's first-step ``buf = g``).
Loading a state dict copies into those same tensors. The state dict itself is torch's, so checkpoints
move freely between this optimizer and ``torch.optim.SGD``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


class StaticSGD(torch.optim.SGD):
    """SGD (momentum, weight decay, optional Nesterov; no dampening) for one param group, whose
    :meth:`update` takes the gradients as a list and never reads a value back to the host."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        self.params: list[torch.Tensor] = list(self.param_groups[0]["params"])
        self.buffers = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        for p, buf in zip(self.params, self.buffers, strict=True):
            self.state[p]["momentum_buffer"] = buf
        device = self.params[0].device
        self.lr_tensor = torch.full((), float(lr), dtype=self.params[0].dtype, device=device)

    def set_lr(self, lr: float) -> None:
        """The rate of the next updates: the param group's number (for the state dict) and the tensor
        the update reads (a device write, enqueued in order with the steps)."""
        self.param_groups[0]["lr"] = lr
        self.lr_tensor.fill_(lr)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's loading, then the loaded buffers copied into the fixed ones."""
        super().load_state_dict(state_dict)
        for p, buf in zip(self.params, self.buffers, strict=True):
            loaded = self.state[p].get("momentum_buffer")
            if loaded is None:
                buf.zero_()
            else:
                buf.copy_(loaded)
            self.state[p]["momentum_buffer"] = buf
        self.lr_tensor.fill_(self.param_groups[0]["lr"])

    @torch.no_grad()
    def update(self, grads: Sequence[torch.Tensor]) -> None:
        """One step with ``grads`` (one per parameter, consumed): torch.optim.SGD's arithmetic."""
        group = self.param_groups[0]
        grads = list(grads)
        if group["weight_decay"]:
            torch._foreach_add_(grads, self.params, alpha=group["weight_decay"])
        torch._foreach_mul_(self.buffers, group["momentum"])
        torch._foreach_add_(self.buffers, grads)
        direction = self.buffers
        if group["nesterov"]:
            direction = torch._foreach_add(grads, self.buffers, alpha=group["momentum"])
        torch._foreach_add_(self.params, torch._foreach_mul(direction, self.lr_tensor), alpha=-1.0)
