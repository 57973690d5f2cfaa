"""Peak memory of a training step, per image: ours against the baseline, and activation checkpointing.

Each configuration runs in a fresh subprocess, so its peak is its own. After one warm-up step (which
allocates gradients and momentum buffers), one step is measured (its forward still holds the previous
gradients, as every step of a run does): on the CPU the peak resident set (VmHWM of
/proc/self/status, reset just before the step) minus the resident set before it; on CUDA
``torch.cuda.max_memory_allocated`` minus what was allocated before it. "Step memory per image" is that
difference over the batch size (activations and temporaries); "peak" is the whole process's. The
baseline runs with 0 DataLoader workers here, so its data lives in the measured process as ours does.

ResNet-1202 at batch 128 runs with and without ``checkpoint_activations`` (recompute each block in
backward); the target is a peak under a third of the one without. ``--quick`` uses batch 8 for it
(said in the table). A configuration whose estimated peak exceeds 85% of the available memory is not
run: the table shows the linear estimate from batch 8, marked as such.

Usage: ``python benchmarks/bench_memory.py [--quick] [--threads N] [--device D]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from common import (
    CIFAR_MEAN,
    CIFAR_STD,
    add_common_args,
    bench_environment,
    load_images,
    print_table,
    proc_status_bytes,
    reset_peak_rss,
    save_json,
    setup,
)

TARGET_FRACTION = 1 / 3  # checkpointed peak / plain peak, ResNet-1202 at batch 128
MEMORY_SAFETY = 0.85  # fraction of MemAvailable a configuration may be expected to use
# (model, image size, batch on CUDA, CPU, CPU --quick)
CONFIGS = (
    ("resnet20", 32, 128, 128, 128),
    ("resnet56", 32, 128, 128, 128),
    ("resnet18", 224, 128, 16, 8),
    ("resnet50", 224, 64, 16, 8),
)
DEEP = ("resnet1202", 32, 128, 128, 8)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Build one pipeline, warm it up, measure one step's peak memory (runs in the subprocess)."""
    device = setup(args)
    images, labels, _ = load_images(args.batch * 2, args.size)
    if args.pipeline == "ours":
        from bench_train import OursTrain, ours_settings

        pipe = OursTrain(
            args.model,
            images,
            labels,
            args.batch,
            device,
            ours_settings(device, args.model),
            checkpoint_activations=args.checkpoint_activations,
        )
    else:
        from baseline import BaselineTrain

        pipe = BaselineTrain(args.model, images, labels, args.batch, 0, device, CIFAR_MEAN, CIFAR_STD)
    pipe.run(1)  # gradients, momentum buffers, oneDNN scratch and (CUDA) compilation come first
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = proc_status_bytes("VmRSS")
        reset_peak_rss()
    start = time.perf_counter()
    pipe.run(1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = proc_status_bytes("VmHWM")
    return {"before_bytes": before, "peak_bytes": peak, "step_s": time.perf_counter() - start}


def measure(
    model: str, size: int, batch: int, pipeline: str, checkpoint: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its numbers with per-image figures."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", model, "--size", str(size)]
    cmd += ["--batch", str(batch), "--pipeline", pipeline, "--threads", str(args.threads)]
    cmd += ["--device", args.device] + (["--checkpoint-activations"] if checkpoint else [])
    # glibc's dynamic mmap threshold keeps freed activations in its heap, where fragmentation lifts
    # the peak RSS above the peak of live memory; a fixed 64 KiB threshold gives every tensor its
    # own mapping, returned when freed, so VmHWM follows the live peak. Both pipelines get it.
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{model} {pipeline} batch {batch} failed ({done.returncode}): {tail[0]}")
    r = json.loads(lines[-1][len("RESULT ") :])
    step = r["peak_bytes"] - r["before_bytes"]
    return r | {
        "model": model,
        "image_size": size,
        "batch_size": batch,
        "pipeline": pipeline,
        "checkpoint_activations": checkpoint,
        "step_bytes": step,
        "step_bytes_per_image": step / batch,
        "estimated": False,
    }


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def deep_rows(args: argparse.Namespace, batch: int, device: torch.device) -> list[dict[str, Any]]:
    """ResNet-1202 with and without checkpointing; a plain run too big for this machine is estimated."""
    name, size = DEEP[0], DEEP[1]
    rows = [measure(name, size, batch, "ours", True, args)]
    probe = 8
    room = available_bytes() if device.type == "cpu" else None
    if room is not None and batch > probe:
        small = measure(name, size, probe, "ours", False, args)
        expected = small["before_bytes"] + small["step_bytes_per_image"] * batch
        if expected > MEMORY_SAFETY * room:
            step = small["step_bytes_per_image"] * batch
            est = small | {"batch_size": batch, "step_bytes": step, "peak_bytes": expected, "estimated": True}
            return [*rows, est | {"step_s": None}]
    return [*rows, measure(name, size, batch, "ours", False, args)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every configuration in its own subprocess, print the table, optionally save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-activations", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(c[0] for c in CONFIGS), help="comma-separated")
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return {}
    device = setup(args)
    column = 2 if device.type == "cuda" else 4 if args.quick else 3
    rows = []
    for cfg in CONFIGS:
        if cfg[0] in args.models.split(","):
            for pipeline in ("baseline", "ours"):
                rows.append(measure(cfg[0], cfg[1], cfg[column], pipeline, False, args))
                print(f"  {cfg[0]} {pipeline}: {rows[-1]['step_bytes_per_image'] / 2**20:.1f} MiB/image")
    deep = deep_rows(args, DEEP[column], device)
    rows += deep
    plain_peak, ckpt_peak = deep[1]["peak_bytes"], deep[0]["peak_bytes"]
    results = {
        "benchmark": "memory",
        "quick": args.quick,
        "environment": bench_environment(device),
        "measure": "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
        "rows": rows,
        "checkpointing": {
            "batch_size": deep[0]["batch_size"],
            "peak_fraction": ckpt_peak / plain_peak,
            "step_fraction": deep[0]["step_bytes"] / deep[1]["step_bytes"],
            "target": TARGET_FRACTION,
            "plain_estimated": deep[1]["estimated"],
        },
    }
    report(results)
    if args.json:
        save_json(args.json, results)
    return results


def report(results: dict[str, Any]) -> None:
    """The per-image table and the checkpointing line."""
    mib = 2**20
    table = [
        [
            f"{r['model']} {r['image_size']}px b{r['batch_size']}"
            + (" ckpt" if r["checkpoint_activations"] else ""),
            r["pipeline"],
            f"{r['step_bytes_per_image'] / mib:.2f}",
            f"{r['peak_bytes'] / mib:,.0f}" + (" (est.)" if r["estimated"] else ""),
            r["step_s"],
        ]
        for r in results["rows"]
    ]
    print_table(
        f"Training-step memory ({results['measure']}), MiB",
        ["config", "pipeline", "step MiB/image", "peak MiB", "s/step"],
        table,
    )
    c = results["checkpointing"]
    note = " (--quick: batch 8, so fixed costs weigh more)" if c["batch_size"] != DEEP[3] else ""
    print(
        f"ResNet-1202 b{c['batch_size']}{note}: checkpointed peak = {c['peak_fraction']:.2f} of the plain "
        f"peak (step memory {c['step_fraction']:.2f}); target < {c['target']:.2f}"
        + (" [plain peak estimated, not run: too big for this machine]" if c["plain_estimated"] else "")
    )


if __name__ == "__main__":
    main()
