"""Where the default training step spends its time: torch.profiler over a few steps after warm-up.

The step is the one ``resnetlab train`` runs (``TrainStep`` fed by ``TensorBatches``: uint8 images on
the device, crop, flip and normalisation per batch on the device), in the mode ``--precision`` and
``--memory-format`` ask for (auto: what ``resnetlab train`` would choose for the net here). Prints the
top ``--top`` ops by self CPU time with their share of the profiled CPU time, then the share of the
optimizer step (torch's own ``Optimizer.step`` record, everything inside it) and of the data path
(drawing and augmenting a batch, recorded here as ``data``).

Shares are of the summed self CPU time of every op on the profiled thread: an op that runs on
several intra-op threads counts its wall time once, so with more threads the shares stay comparable.

Usage: ``python benchmarks/profile_step.py [--model resnet20] [--precision auto] [--memory-format auto]
[--compile] [--threads N] [--batch-size 128] [--warmup 3] [--steps 5] [--top 15] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from common import (
    CIFAR_MEAN,
    CIFAR_STD,
    add_common_args,
    forever,
    load_images,
    print_table,
    save_json,
    setup,
    train_setup,
)
from resnetlab.analysis.counts import meta_model
from resnetlab.data.augment import Normalizer
from resnetlab.data.loader import ImageSet, TensorBatches
from resnetlab.engine.precision import MEMORY_FORMATS, PRECISIONS, choose_mode
from resnetlab.engine.step import TrainStep

DATA_LABEL = "data"
OPTIMIZER_PREFIX = "Optimizer.step#"  # torch.optim records every step under this name


def shares(events: list[Any], top: int) -> dict[str, Any]:
    """The top ``top`` ops by self CPU time with their shares, and the data path's and the optimizer
    step's shares (their inclusive CPU time), from ``key_averages()`` of a profile."""
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    inclusive = {e.key: e.cpu_time_total for e in events}
    optimizer = sum(t for k, t in inclusive.items() if k.startswith(OPTIMIZER_PREFIX))
    return {
        "total_self_cpu_s": total / 1e6,
        "top": [
            {
                "op": e.key,
                "calls": e.count,
                "self_cpu_s": e.self_cpu_time_total / 1e6,
                "share": e.self_cpu_time_total / total,
            }
            for e in ops[:top]
        ],
        "optimizer_share": optimizer / total,
        "data_share": inclusive.get(DATA_LABEL, 0.0) / total,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile the step, print the tables, optionally save JSON; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)  # --quick here: a smoke test of batch 16, 1 warm-up step and 2 profiled
    parser.add_argument("--model", default="resnet20", help="a registered CIFAR-size net")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--memory-format", choices=MEMORY_FORMATS, default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="steps before the profile")
    parser.add_argument("--steps", type=int, default=5, help="steps profiled")
    parser.add_argument("--top", type=int, default=15, help="ops listed")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="profile the compiled step (what auto trains on a CPU for runs of 5,000 iterations and more); "
        "inductor's fused kernels are listed by name",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.warmup, args.steps = 16, 1, 2
    device = setup(args)
    mode = choose_mode(device, args.precision, args.memory_format, meta_model(args.model))
    compiled = ", compiled" if args.compile else ""
    print(f"{args.model}: precision {mode.precision}, {mode.memory_format}{compiled} ({mode.reason})")
    model, optimizer = train_setup(args.model, device)
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # each fused CPU kernel gets its own record
    step = TrainStep(model, optimizer, amp=mode.amp, channels_last=mode.channels_last, compile=args.compile)
    images, labels, source = load_images(4 * args.batch_size, 32)
    normalizer = Normalizer(
        torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None], "per-channel"
    )
    data = TensorBatches(ImageSet(images, labels), args.batch_size, normalizer, train=True, device=device)
    batches = forever(data.epoch)

    def one_step() -> None:
        with record_function(DATA_LABEL):
            x, y = next(batches)
        step.step(x, y)

    for _ in range(args.warmup):
        one_step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            one_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    found = shares(list(prof.key_averages()), args.top)
    print_table(
        f"Top {args.top} ops by self CPU time, {args.steps} steps of batch {args.batch_size} ({source}; "
        f"{wall / args.steps * 1e3:.0f} ms a step under the profiler, {torch.get_num_threads()} threads)",
        ["op", "calls", "self CPU s", "share"],
        [[t["op"], t["calls"], t["self_cpu_s"], f"{100 * t['share']:.1f}%"] for t in found["top"]],
    )
    print(
        f"\noptimizer step (SGD, inclusive): {100 * found['optimizer_share']:.1f}% of the profiled CPU time; "
        f"data path (draw, crop, flip, normalise a batch, inclusive): {100 * found['data_share']:.1f}%"
    )
    results = {
        "benchmark": "profile_step",
        "model": args.model,
        "precision": mode.precision,
        "memory_format": mode.memory_format,
        "compile": args.compile,
        "mode_reason": mode.reason,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "wall_s_per_step": wall / args.steps,
        **found,
    }
    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
