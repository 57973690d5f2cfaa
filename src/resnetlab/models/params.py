"""Parameter counts: here, below both the engine (a run's record) and the analysis (per-stage counts
in :mod:`resnetlab.analysis.counts`), so neither needs the other for them."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
