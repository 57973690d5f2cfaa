"""Tiny randomly initialised nets saved as run directories, for the studies of trained nets (lesion,
landscape): no real weights and no training needed. BN gets random running statistics and affine
parameters, so eval mode differs visibly from train mode and from the identity."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from resnetlab.data.augment import Normalizer
from resnetlab.data.datasets import load_dataset
from resnetlab.engine.checkpoint import save_checkpoint
from resnetlab.models import ResNet
from tiny import TINY_NET, synthetic_spec

DATA = synthetic_spec(64, 48)  # 48 test images: evaluations of 40 fit
ITERATIONS = 100  # what every saved "trained" net claims: the same, so twins are paired


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters for every BN of ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
    return model


def tiny_net(blocks: int, residual: bool, seed: int = 0, **config) -> ResNet:
    torch.manual_seed(seed)
    model = ResNet(**(TINY_NET | {"layers": [blocks] * 3, "residual": residual} | config))
    return randomise_bn(model, seed).eval()


def checkpoint(
    blocks: int,
    residual: bool,
    seed: int = 0,
    data: str = DATA,
    normalizer: Normalizer | None = None,
    **config,
) -> dict:
    """A checkpoint dict of a tiny net (depth 6 * blocks + 2) on ``data``, its inputs normalised by
    ``normalizer`` (default: fitted to the training images)."""
    model = tiny_net(blocks, residual, seed, **config)
    splits = load_dataset(data)
    normalizer = normalizer or Normalizer.fit(splits.train.images)
    return {
        "model": model.state_dict(),
        "model_name": "resnet20" if residual else "plain20",
        "model_config": model.config,
        "classes": list(splits.classes),
        "normalizer": normalizer.state_dict(),
        "image_size": [8, 8],
        "config": {"dataset": data},
        "iteration": ITERATIONS,
    }


def save_run(ckpt: dict, run: Path) -> Path:
    """A run directory holding ``ckpt`` as its checkpoint.pt."""
    run.mkdir(parents=True)
    save_checkpoint(ckpt, run / "checkpoint.pt")
    return run


def twin_runs(root: Path) -> dict[str, Path]:
    """plain-14 and ResNet-14 (2 blocks per stage) and ResNet-20 (3) as run directories."""
    save_run(checkpoint(2, False), root / "plain14")
    save_run(checkpoint(2, True), root / "resnet14")
    save_run(checkpoint(3, True, seed=1), root / "resnet20")
    return {name: root / name for name in ("plain14", "resnet14", "resnet20")}


def net_entry(label: str, depth: int, residual: bool, source: str = "resnetlab", **measured) -> dict:
    """A net's entry in a study's record, as the verdicts read it (trained for 1 iteration by
    ``source``); ``measured`` adds what the study measured."""
    return {
        "label": label,
        "depth": depth,
        "residual": residual,
        "source": source,
        "iterations": 1,
        **measured,
    }


def count_measurements(monkeypatch, study) -> list[str]:
    """Wrap ``study._measure`` (a lesion or landscape module) so that every net it measures is
    recorded: the returned list of labels grows with each measurement."""
    measured: list[str] = []
    real = study._measure

    def counting(net, *args, **kwargs):
        measured.append(net.info["label"])
        return real(net, *args, **kwargs)

    monkeypatch.setattr(study, "_measure", counting)
    return measured
