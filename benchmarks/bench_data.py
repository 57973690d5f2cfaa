"""Data pipeline speed: is the data ever what a CIFAR run waits for?

(a) Augmented CIFAR training batches per second (batch 128: gather, pad-4 crop + flip, per-pixel
    mean, all by ``TensorBatches`` on the device from 50,000 resident uint8 32x32 images) against
    ResNet-20 training steps per second on the same device and threads (forward, backward, SGD
    step, in the default precision and memory format). The two alternate block by block (see
    ``common.alternate``), so load from other processes hits both alike; the statistic is the
    median block. Target: ratio >= 20, i.e. the data costs < 5% of a step.
(b) Seconds to load the decoded CIFAR-10 JPEG folder cache (listing the folder with every file's
    size and mtime, which keys the cache, plus reading the tensors), built first if absent.
    Target: < 2 s. Skipped with a message when the folder is not on this machine.

Usage: ``python benchmarks/bench_data.py [--quick] [--threads N] [--device D] [--json PATH]
[--data-dir DIR] [--folder PATH]``. ``main(argv)`` returns the results (used by ``run_all.py``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from common import (
    CIFAR_JPEG,
    add_common_args,
    alternate,
    bench_environment,
    forever,
    median,
    print_table,
    save_json,
    setup,
    train_setup,
)
from resnetlab.analysis.counts import meta_model
from resnetlab.data.augment import Normalizer
from resnetlab.data.folder import load_folder
from resnetlab.data.loader import ImageSet, TensorBatches
from resnetlab.engine.precision import choose_mode
from resnetlab.engine.step import TrainStep

TARGET_RATIO = 20.0
TARGET_LOAD_S = 2.0
BATCH = 128
IMAGES = 50_000


def batch_runner(device: torch.device, per_block: int) -> Any:
    """A callable that draws ``per_block`` augmented, normalised training batches."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (IMAGES, 3, 32, 32), dtype=torch.uint8, generator=g)
    data = ImageSet(images, torch.arange(IMAGES) % 10)
    batches = TensorBatches(data, BATCH, Normalizer.fit(images), train=True, seed=0, device=device)
    stream = forever(batches.epoch)

    def run() -> None:
        for _ in range(per_block):
            next(stream)

    return run


def step_runner(device: torch.device) -> Any:
    """A callable that runs one ResNet-20 SGD training step on a batch of 128, in the mode `resnetlab
    train` picks by default on ``device`` (bf16 + channels_last where bf16 is native: the fastest
    step, so the hardest test of the data path)."""
    model, optimizer = train_setup("resnet20", device)
    mode = choose_mode(device, model=model)
    step = TrainStep(model, optimizer, amp=mode.amp, channels_last=mode.channels_last)
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)

    def run() -> None:
        step.step(x, y)

    return run


def folder_cache_load(folder: Path, data_dir: str | None) -> dict[str, Any]:
    """Seconds to load ``folder:PATH`` from its decoded cache (the first call builds it if needed)."""
    start = time.perf_counter()
    data = load_folder(folder, cache_dir=data_dir)
    first = time.perf_counter() - start
    start = time.perf_counter()
    data = load_folder(folder, cache_dir=data_dir)
    load = time.perf_counter() - start
    splits = [s for s in (data.train, data.val, data.test) if s is not None]
    return {
        "images": sum(len(s) for s in splits),
        "first_call_s": first,  # includes decoding when the cache did not exist yet
        "cache_load_s": load,
        "cache": str(data.cache_path),
        "target_s": TARGET_LOAD_S,
        "ok": load < TARGET_LOAD_S,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the data benchmark, print its table, optionally save JSON; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--data-dir", default=None, help="cache root (default: the user's resnetlab cache)")
    parser.add_argument("--folder", type=Path, default=CIFAR_JPEG, help="the CIFAR-10 JPEG folder to time")
    args = parser.parse_args(argv)
    device = setup(args)
    per_block, rounds = (10, 5) if args.quick else (20, 15)
    times = alternate(
        {"batches": batch_runner(device, per_block), "step": step_runner(device)},
        warmup=2,
        rounds=rounds,
        device=device,
    )
    rate = per_block / median(times["batches"])
    step_rate = 1 / median(times["step"])
    results: dict[str, Any] = {
        "benchmark": "data",
        "quick": args.quick,
        "environment": bench_environment(device),
        "batch_size": BATCH,
        "augmented_batches_per_s": rate,
        "resnet20_steps_per_s": step_rate,
        "ratio": rate / step_rate,
        "ratio_target": TARGET_RATIO,
        "ratio_ok": rate / step_rate >= TARGET_RATIO,
        "step_mode": choose_mode(device, model=meta_model("resnet20")).describe(),
        "block_times_s": times,
        "batches_per_block": per_block,
        "folder_cache": None,
    }
    rows = [
        ["augmented CIFAR batches/s (128)", rate, "-"],
        ["ResNet-20 training steps/s (128)", step_rate, "-"],
        ["ratio", f"{rate / step_rate:,.0f}x", f">= {TARGET_RATIO:.0f}x"],
        ["data time per step", f"{100 * step_rate / rate:.1f}%", f"< {100 / TARGET_RATIO:.0f}%"],
    ]
    if (args.folder / "train").is_dir():
        load = results["folder_cache"] = folder_cache_load(args.folder, args.data_dir)
        rows.append(
            [f"load {load['images']:,} decoded images, s", load["cache_load_s"], f"< {TARGET_LOAD_S:.0f}"]
        )
    else:
        print(f"skipping the cache load timing: {args.folder} is not on this machine")
    print_table("data pipeline", ["measure", "value", "target"], rows)
    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
