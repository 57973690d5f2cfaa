"""One process with N threads against N processes with one thread each (DDP over gloo), end to end.

Each contender is a real `resnetlab train` of ResNet-20 on CIFAR-10 (data, augmentation, step,
logging; the global batch 128 either way, so two ranks train on 64 images each, with BN per rank:
the paper's own setting of batch 128 on two GPUs). Rounds alternate the contenders; each round's
rate is the median of its logged images/s after the first rows (start-up, data loading and the
final evaluation are left out, and reported apart as wall time).

Usage: ``python benchmarks/bench_procs.py --data-dir DIR [--rounds 3] [--iterations 200]``; ``--quick``
is a smoke test on synthetic images (2 rounds of 40 iterations).
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

from common import median, paired_ratio, print_table, save_json
from resnetlab.engine.rundir import read_metrics


def command(procs: int, out: Path, args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one contender."""
    train = ["train", "--model", "resnet20", "--dataset", args.dataset, "--out", str(out), "--overwrite"]
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


def one_round(procs: int, args: argparse.Namespace) -> dict[str, float]:
    """Run one contender once; its steady images/s (median of logged rows after the first 3) and wall s."""
    out = Path(tempfile.mkdtemp(prefix=f"procs{procs}-"))
    try:
        argv, env = command(procs, out, args)
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, timeout=3600)
        wall = time.perf_counter() - start
        rows = [r for r in read_metrics(out) if r["kind"] == "train"]
        return {"images_per_s": median([r["images_per_s"] for r in rows[3:]]), "wall_s": wall}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir")
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
    contenders = {f"1 process x {args.threads} threads": 1}
    contenders[f"{args.procs} processes x {max(1, args.threads // args.procs)} thread(s)"] = args.procs
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, procs in contenders.items():
            runs[name].append(one_round(procs, args))
            print(f"  {name}: {runs[name][-1]['images_per_s']:.0f} img/s", flush=True)
    first, second = contenders
    seconds = {name: [1 / r["images_per_s"] for r in rs] for name, rs in runs.items()}
    rows = [
        [
            name,
            median([r["images_per_s"] for r in rs]),
            median([r["wall_s"] for r in rs]),
            f"{paired_ratio(seconds[first], seconds[name]):.2f}x",
        ]
        for name, rs in runs.items()
    ]
    print_table(
        f"ResNet-20 training, {args.iterations} iterations, precision {args.precision}, data included "
        "(medians of alternating rounds; paired = median of per-round ratios)",
        ["contender", "images/s", "wall s", f"paired vs {first}"],
        rows,
    )
    results = {"benchmark": "procs", "args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}
    results["paired_ratio"] = paired_ratio(seconds[first], seconds[second])
    results["procs"] = args.procs
    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
