"""Devices and torchrun: process groups, DDP wrapping, synchronised BN, collectives on metrics.

Under ``torchrun --nproc_per_node=N`` every process runs the same ``train``; the environment
variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) select the process group:
NCCL on CUDA, gloo on the CPU. A single process is the special case ``world_size == 1``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from resnetlab.errors import UserError

T = TypeVar("T")


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable explicit choice is a UserError."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is available (try --device cpu)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not has_mps:
        raise UserError("--device mps was asked for but Apple's MPS backend is not available here")
    return torch.device(name)


def wide_float(device: torch.device) -> torch.dtype:
    """The widest float the device has, for sums of many numbers (MPS has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (the GPU model for CUDA)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed torch's global RNG and choose reproducible (or fastest) kernels for this process."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    # warn_only: a few CUDA kernels (the backward of the global average pool) have no deterministic
    # version and would otherwise stop the run; on the CPU every op used here is deterministic.
    # Only when it changes: the call imports torch._dynamo, about 7 s of start-up on 2 cores.
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.manual_seed(seed)


@dataclass
class DistContext:
    """This process's place in the job and the device it trains on."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        """Tear down the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def synchronize(self) -> None:
        """Wait for the device to finish what was queued (a no-op on a CPU), e.g. before a clock reading."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce ``tensor`` in place across ranks (a no-op for one process); returns it."""
        if self.distributed:
            ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
            dist.all_reduce(tensor, op=ops[op])
        return tensor

    def agree(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give every rank its result, or raise its UserError on every rank.

        Used for decisions about the run directory, so no rank trains while rank 0 refuses.
        """
        result: list[Any] = [None, None]
        if self.is_main:
            try:
                result[0] = fn()
            except UserError as exc:
                result[1] = str(exc)
        if self.distributed:
            dist.broadcast_object_list(result, src=0)
        if result[1] is not None:
            raise UserError(result[1])
        return result[0]


def setup_distributed(device: str) -> DistContext:
    """Join the torchrun process group when the environment describes one, and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, local_rank)
    if world_size == 1:
        return DistContext(0, 1, dev)
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), dev, owns)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiably: the gradient of a sum over ranks is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch, on any device.

    torch's SyncBatchNorm runs on GPUs only; this one all-reduces (sum, sum of squares, count)
    with a backward that all-reduces the gradients of those sums, so the gradients are those of BN
    over the global batch. Parameter and buffer names are BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=xf.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), xf.pow(2).sum((0, 2, 3)), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean.pow(2)).clamp_min(0)
        self.num_batches_tracked.add_(1)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        scale = self.weight * torch.rsqrt(var + self.eps)
        out = xf * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]
        return out.to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one (torch's on GPUs, :class:`GroupBatchNorm2d` else)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GroupBatchNorm2d(child.num_features, child.eps, child.momentum, device=device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_bn(child, device)
    return model
