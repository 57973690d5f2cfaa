"""One process with N threads against N processes with one thread each (DDP over gloo), end to end.

Each contender is a real `resnetlab train` of a CIFAR net (ResNet-20 unless ``--models`` says
otherwise) on CIFAR-10 (data, augmentation, step, logging; the global batch 128 either way, so two
ranks train on 64 images each, with BN per rank: the paper's own setting of batch 128 on two GPUs).
Rounds alternate the contenders; each round's rate is the median of its logged images/s after the
first rows (start-up, data loading and the final evaluation are left out, and reported apart as wall
time). A 4096x4096 matmul in the runs' precision (read from their config.yaml) takes its turn in
each round on all the threads, so each contender also gets its fraction of the GEMM rate, with the
FLOPs of a step counted as bench_train.py counts them (the same columns as its table).

Usage: ``python benchmarks/bench_procs.py --data-dir DIR [--models resnet20,resnet56] [--rounds 3]
[--iterations 200]``; ``--quick`` is a smoke test on synthetic images (2 rounds of 40 iterations).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from common import MATMUL_N, alternate, matmul_runner, median, paired_ratio, print_table, save_json
from resnetlab.analysis.counts import meta_model, train_step_flops
from resnetlab.engine.rundir import read_metrics

GEMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def command(procs: int, out: Path, args: argparse.Namespace, model: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one contender."""
    train = ["train", "--model", model, "--dataset", args.dataset, "--out", str(out), "--overwrite"]
    train += ["--iterations", str(args.iterations), "--log-every", "10", "--eval-every", "100000", "--quiet"]
    train += ["--precision", args.precision]
    if args.data_dir:
        train += ["--data-dir", args.data_dir]
    threads = max(1, args.threads // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if procs == 1:
        return [sys.executable, "-m", "resnetlab", *train], env
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    return [*launcher, "-m", "resnetlab", *train], env


def one_round(procs: int, args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Run one contender once; its steady images/s (median of logged rows after the first 3), wall s
    and the precision it trained in."""
    out = Path(tempfile.mkdtemp(prefix=f"procs{procs}-"))
    try:
        argv, env = command(procs, out, args, model)
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, timeout=3600)
        wall = time.perf_counter() - start
        rows = [r for r in read_metrics(out) if r["kind"] == "train"]
        precision = yaml.safe_load((out / "config.yaml").read_text())["precision"]
        return {
            "images_per_s": median([r["images_per_s"] for r in rows[3:]]),
            "wall_s": wall,
            "precision": precision,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def bench_model(model: str, contenders: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Alternating rounds of whole runs (and a GEMM in their precision) for one net; its result row."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    gemm_s: list[float] = []
    gemm: Any = None
    for _ in range(args.rounds):
        for name, procs in contenders.items():
            runs[name].append(one_round(procs, args, model))
            print(f"  {model}, {name}: {runs[name][-1]['images_per_s']:.0f} img/s", flush=True)
        if gemm is None:  # the first run says which precision auto chose
            gemm = matmul_runner(torch.device("cpu"), dtype=GEMM_DTYPES[runs[name][0]["precision"]])
        gemm_s += alternate({"gemm": gemm}, warmup=1, rounds=1, device=torch.device("cpu"))["gemm"]
    precision = next(iter(runs.values()))[0]["precision"]
    step_flops = train_step_flops(meta_model(model), 32)
    first = next(iter(contenders))
    seconds = {name: [1 / r["images_per_s"] for r in rs] for name, rs in runs.items()}
    # images/s x FLOPs per image over the GEMM's FLOP/s, paired by round
    per_round = {
        name: [step_flops * g / (s * 2 * MATMUL_N**3) for s, g in zip(t, gemm_s, strict=True)]
        for name, t in seconds.items()
    }
    return {
        "model": model,
        "procs": contenders[list(contenders)[1]],
        "contenders": list(contenders),
        "precision": precision,
        "train_flops_per_image": step_flops,
        "gemm_flops": 2 * MATMUL_N**3 / median(gemm_s),
        "images_per_s": {name: median([r["images_per_s"] for r in rs]) for name, rs in runs.items()},
        "wall_s": {name: median([r["wall_s"] for r in rs]) for name, rs in runs.items()},
        "paired_vs_first": {name: paired_ratio(seconds[first], t) for name, t in seconds.items()},
        "paired_ratio": paired_ratio(seconds[first], seconds[list(contenders)[1]]),
        "flop_fraction": {name: median(v) for name, v in per_round.items()},
        "runs": runs,
        "gemm_times_s": gemm_s,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir")
    parser.add_argument("--models", default="resnet20", help="comma-separated CIFAR nets")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads in all")
    parser.add_argument("--procs", type=int, default=2, help="processes of the second contender")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--quick", action="store_true", help="synthetic images, 2 rounds of 40 iterations")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.dataset, args.data_dir, args.iterations, args.rounds = "synthetic:4096,256,32,10", None, 40, 2
    torch.set_num_threads(args.threads)  # the GEMM runs on all the threads the contenders share
    contenders = {f"1 process x {args.threads} threads": 1}
    contenders[f"{args.procs} processes x {max(1, args.threads // args.procs)} thread(s)"] = args.procs
    rows = [bench_model(model, contenders, args) for model in args.models.split(",")]
    first = next(iter(contenders))
    for r in rows:
        print_table(
            f"{r['model']} training, {args.iterations} iterations, precision {r['precision']}, data "
            f"included ({r['train_flops_per_image'] / 1e6:.0f} MFLOP per image; GEMM "
            f"{r['gemm_flops'] / 1e9:.0f} GFLOP/s; medians of alternating rounds; paired = median of "
            "per-round ratios)",
            ["contender", "images/s", "wall s", f"paired vs {first}", "of GEMM"],
            [
                [
                    name,
                    r["images_per_s"][name],
                    r["wall_s"][name],
                    f"{r['paired_vs_first'][name]:.2f}x",
                    f"{100 * r['flop_fraction'][name]:.0f}%",
                ]
                for name in contenders
            ],
        )
    results = {"benchmark": "procs", "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
