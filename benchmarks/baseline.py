"""The conventional pipeline every benchmark compares against, written as people usually write it.

A ``Dataset`` that turns each stored uint8 image into a PIL image (as ``torchvision.datasets.CIFAR10``
does) and applies torchvision's per-sample transforms ``RandomCrop(size, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize``; a ``DataLoader`` with shuffling and the
worker count that is fastest on this machine (:func:`pick_workers` measures 0, 1, 2 and, with more
CPUs, 4 and 8); an eager NCHW float32 model; ``torch.optim.SGD``; the usual loop with
``loss.item()`` for the running loss.

Alternating with worker processes needs care: between two baseline blocks its workers would keep
preparing batches while *our* block is being timed, moving the baseline's data cost into our time.
So the workers are stopped (SIGSTOP) at the end of every baseline block and continued (SIGCONT) at the
start of the next: they use the CPU only while the baseline is on the clock, as in a run of its own.

The model is resnetlab's own ``build_model(name)`` run plainly (eager, NCHW, no folding): the same
architecture by construction (same parameters and multiply-adds), so the ratio measures the pipeline
and the step, not a difference between two implementations of the net. Its modules are ordinary
Conv2d/BatchNorm2d/ReLU exactly as a torchvision-style CIFAR ResNet-20 uses them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from common import alternate, median, train_setup
from resnetlab.models import build_model


def _record_pid(pids: Any, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: publish this worker's process id."""
    pids[worker_id] = os.getpid()


class PILImages(Dataset):
    """uint8 images kept as an (N, H, W, C) array, handed out as PIL images through ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: transforms.Compose) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy().copy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def train_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """The paper's augmentation in its usual torchvision spelling."""
    return transforms.Compose(
        [
            transforms.RandomCrop(size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def eval_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> transforms.Compose:
    """Test-time preprocessing: no augmentation."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])


class BaselineTrain:
    """The conventional training loop of ``model_name`` on ``images``; :meth:`run` does ``steps`` steps."""

    def __init__(
        self,
        model_name: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        workers: int,
        device: torch.device,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int = 0,
    ) -> None:
        self.device = device
        self.worker_pids = multiprocessing.Array("i", max(workers, 1))  # filled in by each worker
        self.model, self.optimizer = train_setup(model_name, device, seed)
        dataset = PILImages(images, labels, train_transform(images.shape[-1], mean, std))
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            # Workers stay alive across epochs, so a short benchmark does not pay their start-up
            # once per pass over its small image set (that would flatter our side).
            persistent_workers=workers > 0,
            worker_init_fn=partial(_record_pid, self.worker_pids),
        )
        self.batches = self._forever()
        self.running_loss = 0.0

    def _signal_workers(self, sig: signal.Signals) -> None:
        for pid in self.worker_pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def _forever(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.loader

    def run(self, steps: int) -> None:
        """``steps`` iterations of the usual loop (data, forward, loss, backward, SGD step)."""
        self._signal_workers(signal.SIGCONT)
        for _ in range(steps):
            x, y = next(self.batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.running_loss += loss.item()
        self._signal_workers(signal.SIGSTOP)

    def close(self) -> None:
        """Stop the loader's worker processes."""
        self._signal_workers(signal.SIGCONT)
        self.batches.close()
        del self.loader


def baseline_eval_model(model_name: str, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """The eager NCHW float32 model in eval mode, as usually run for inference."""
    torch.manual_seed(seed)
    return build_model(model_name).to(device).eval()


def eval_batch(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """A test batch prepared the conventional way (PIL -> ToTensor -> Normalize, then stacked)."""
    prepare = eval_transform(mean, std)
    hwc = images.permute(0, 2, 3, 1).numpy()
    return torch.stack([prepare(Image.fromarray(np.ascontiguousarray(a))) for a in hwc])


def pick_workers(
    make: Callable[[int], BaselineTrain],
    device: torch.device,
    *,
    steps: int,
    rounds: int,
) -> tuple[BaselineTrain, dict[int, float]]:
    """Time the whole baseline step with each DataLoader worker count, alternating; keep the fastest.

    The counts are 0, 1 and 2, and 4 and 8 where the machine has that many CPUs (a GPU host).
    Returns the fastest pipeline (warm, ready to use) and the median seconds per step of each count.
    """
    cpus = len(os.sched_getaffinity(0))
    candidates = (0, 1, 2, *(w for w in (4, 8) if w <= cpus))
    pipelines = {w: make(w) for w in candidates}
    times = alternate(
        {str(w): partial(p.run, steps) for w, p in pipelines.items()}, warmup=1, rounds=rounds, device=device
    )
    per_step = {w: median(times[str(w)]) / steps for w in candidates}
    best = min(per_step, key=per_step.__getitem__)
    for w, p in pipelines.items():
        if w != best:
            p.close()
    return pipelines[best], per_step
