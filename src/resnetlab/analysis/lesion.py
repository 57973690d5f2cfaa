"""Deleting blocks of a trained net at test time: the lesion study of Veit, Wilber & Belongie (2016).

Deleting a residual block removes its residual branch F and keeps its shortcut, so the block's output
becomes what the shortcut alone carries: ``x`` for an identity shortcut, the subsampled and
zero-padded ``x`` for an option-A downsampling block, the projection for B/C (then the block's final
ReLU, as in the intact block). A plain block has no shortcut to keep: it is replaced by the identity,
which is only possible where its input and output have the same shape; a plain block that changes
the shape cannot be deleted at all (:attr:`BlockSite.deletable`).

:func:`lesion_errors` evaluates many deletion sets on one pass over the data. Every set first differs
from the intact net at its lowest deleted block, so each batch runs the intact net once, keeps every
block's input, and starts each set from there: about half the work of evaluating the sets one by one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.models.resnet import ResNet


@dataclass(frozen=True)
class BlockSite:
    """One block of a net as the lesion study sees it."""

    index: int  # 1-based, in forward order (the x axis of the figures)
    name: str  # module name, e.g. "layer2.0"
    residual: bool
    shape_changes: bool  # stride 2 or more output channels: the stage's first block, bar the first stage

    @property
    def deletable(self) -> bool:
        """A residual block always (its shortcut stays); a plain one only where the shapes match."""
        return self.residual or not self.shape_changes


def _changes_shape(block: nn.Module) -> bool:
    """Stride 2 or more output than input channels (a bottleneck's stride may sit on its 3x3 conv)."""
    convs = [block.conv1, block.conv2, *([block.conv3] if hasattr(block, "conv3") else [])]
    strided = any(c.stride != (1, 1) for c in convs)
    return strided or convs[0].in_channels != convs[-1].out_channels


def block_sites(model: ResNet) -> list[BlockSite]:
    """Every block of ``model`` in forward order, with whether deleting it is possible."""
    sites = []
    for stage in model.stage_names:
        for j, block in enumerate(getattr(model, stage)):
            sites.append(
                BlockSite(len(sites) + 1, f"{stage}.{j}", bool(block.residual), _changes_shape(block))
            )
    return sites


class Deleted(nn.Module):
    """What is left of a deleted block: its shortcut (residual) or the identity (plain, same shape)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if not block.residual and _changes_shape(block):
            raise ValueError("a plain block that changes the shape cannot be replaced by the identity")
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.block
        if not block.residual:
            return x  # post-activation: x is a ReLU output already, so the block's last ReLU is a no-op
        pre = F.relu(block.bn0(x)) if block.preact else x
        # The block with F = 0: its very shortcut (identity, option A's zero-padding and subsampling,
        # or the projection) and the final ReLU the intact block applies (out of place: the identity
        # shortcut is x itself).
        shortcut = block.shortcut(x, pre)
        return shortcut if block.preact else F.relu(shortcut)


@contextlib.contextmanager
def deleted_blocks(model: ResNet, indices: Iterable[int]):
    """Within the context, ``model`` runs with the blocks of 1-based ``indices`` deleted."""
    stages = [(name, j) for name in model.stage_names for j in range(len(getattr(model, name)))]
    chosen = sorted(set(indices))
    originals = []
    try:
        for i in chosen:
            stage, j = stages[i - 1]
            seq = getattr(model, stage)
            originals.append((seq, j, seq[j]))
            seq[j] = Deleted(seq[j])
        yield model
    finally:
        for seq, j, block in originals:
            seq[j] = block


@dataclass(frozen=True)
class LesionErrors:
    """Top-1 errors of the intact net and of each deletion set, on the same images."""

    intact: float
    deleted: list[float]  # one per deletion set, in the order given
    images: int


def _plans(model: ResNet, sets: Sequence[Iterable[int]]) -> list[list[int]]:
    """Each set as sorted 1-based indices, checked against the net's blocks."""
    sites = block_sites(model)
    plans = [sorted(set(s)) for s in sets]
    for plan in plans:
        if not plan or plan[0] < 1 or plan[-1] > len(sites):
            raise ValueError(f"deletion set {plan} is empty or names no block of a {len(sites)}-block net")
        bad = [i for i in plan if not sites[i - 1].deletable]
        if bad:
            raise ValueError(f"block(s) {bad} change the shape of a plain net and cannot be deleted")
    return plans


def _forward_sets(model: ResNet, x: torch.Tensor, plans: list[list[int]]) -> list[torch.Tensor]:
    """Logits of the intact net, then of each deletion plan, on one batch."""
    blocks = list(model.blocks())
    inputs = [model.stem(x)]  # inputs[i] is the input of block i + 1
    for block in blocks:
        inputs.append(block(inputs[-1]))
    out = [model.head(inputs[-1])]
    for plan in plans:
        h = inputs[plan[0] - 1]  # the same as the intact net's up to the first deletion
        chosen = set(plan)
        for i in range(plan[0], len(blocks) + 1):
            block = blocks[i - 1]
            h = Deleted(block)(h) if i in chosen else block(h)
        out.append(model.head(h))
    return out


@torch.no_grad()
def lesioned_logits(model: ResNet, x: torch.Tensor, sets: Sequence[Iterable[int]]) -> list[torch.Tensor]:
    """Logits of ``model`` on ``x`` intact (first) and with each set of 1-based block indices deleted,
    as :func:`lesion_errors` computes them; call with the model in the mode wanted (eval)."""
    return _forward_sets(model, x, _plans(model, sets))


@torch.no_grad()
def lesion_errors(
    model: ResNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    sets: Sequence[Iterable[int]],
    *,
    device: torch.device | str = "cpu",
    limit: int | None = None,
    autocast: bool = False,
) -> LesionErrors:
    """Top-1 error of ``model`` intact and with each set of 1-based block indices deleted.

    BN runs in eval mode (running statistics), as at test time; the model is left in the mode it
    came in. ``limit`` evaluates the first that many images of ``batches``; ``autocast`` runs the
    forward passes under bf16 autocast. A set naming a block that cannot be deleted is a ValueError.
    """
    plans = _plans(model, sets)
    was_training = model.training
    model.eval()
    wrong = torch.zeros(len(plans) + 1, dtype=torch.int64)
    images = 0
    device = torch.device(device)
    try:
        for x, y in batches:
            take = x.shape[0] if limit is None else min(x.shape[0], limit - images)
            if take <= 0:
                break
            x, y = x[:take].to(device), y[:take].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = _forward_sets(model, x, plans)
            for k, z in enumerate(logits):
                wrong[k] += int((z.argmax(1) != y).sum())
            images += take
    finally:
        model.train(was_training)
    if images == 0:
        raise ValueError("no images were given to evaluate")
    errors = (wrong.double() / images).tolist()
    return LesionErrors(errors[0], errors[1:], images)
