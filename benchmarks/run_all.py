"""Run every benchmark, print one summary table against the targets, save JSON under bench-results/.

``make bench`` runs ``python benchmarks/run_all.py --tta-minutes 40`` (everything, the
time-to-accuracy trainings last, each with that budget); ``make bench-quick`` adds ``--quick``
(fewer steps, smaller CPU batches, no torch.compile on CPU, time-to-accuracy skipped; under 10
minutes on 2 cores). Each benchmark runs even when another fails; a failure is shown in the table
and the exit code is 1.

Usage: ``python benchmarks/run_all.py [--quick] [--threads N] [--device D] [--only a,b] [--skip a,b]
[--tta-minutes M]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from bench_train import TARGET_FLOP_FRACTION
from common import RESULTS_DIR, add_common_args, bench_environment, print_table, save_json, setup

BENCHMARKS = ("train", "procs", "infer", "memory", "data", "tta")


def _module_main(name: str) -> Callable[[list[str]], dict[str, Any]]:
    """The ``main`` of a benchmark module, imported only when it runs."""
    module = {
        "train": "bench_train",
        "procs": "bench_procs",
        "infer": "bench_infer",
        "memory": "bench_memory",
        "data": "bench_data",
        "tta": "bench_time_to_accuracy",
    }[name]
    return __import__(module).main


def _summary_rows(results: dict[str, Any]) -> list[list[Any]]:
    """(measure, value, target, met) rows from whichever benchmarks produced results.

    Ratios are judged on the paired ratio (median of per-round ratios), robust to a busy machine.
    """
    rows: list[list[Any]] = []
    for r in results.get("train", {}).get("rows", []):
        name, cifar = f"train {r['model']} b{r['batch_size']}", r["model"] in ("resnet20", "resnet56")
        shown = f"{r['paired_ratio']:.2f}x (medians {r['ratio']:.2f}x)"
        target = r.get("target_ratio") if r["model"] == "resnet20" else None
        rows.append(_row(f"{name}: ours ({r['ours_settings']})/baseline", shown, r["paired_ratio"], target))
        frac = r["ours_flop_fraction"]
        if cifar and frac is not None:
            goal = TARGET_FLOP_FRACTION
            dtype = r.get("matmul_dtype", "float32")
            shown = f"{100 * frac:.0f}%"
            rows.append(_row(f"{name}: of {dtype} GEMM FLOP/s", shown, frac, goal, f">= {100 * goal:.0f}%"))
        if cifar:
            for label, ratio in r["paired_vs_baseline"].items():
                if label not in ("baseline", r["ours_settings"]):
                    of_gemm = r["flop_fraction"][label]
                    shown = f"{ratio:.2f}x" + ("" if of_gemm is None else f", {100 * of_gemm:.0f}% of GEMM")
                    rows.append(_row(f"{name}: {label}/baseline (contender)", shown))
    for r in results.get("infer", {}).get("rows", []):
        name, targeted = f"infer {r['model']} b{r['batch_size']}", r["model"] == "resnet20"
        shown = f"{r['paired_ratio']:.2f}x (medians {r['ratio']:.2f}x)"
        rows.append(_row(f"{name}: ours/eager", shown, r["paired_ratio"], 1.25 if targeted else None))
        error = max(r["max_relative_error"].values())
        rows.append(_row(f"{name}: max rel. error", f"{error:.1e}", -error, -1e-4, "<= 1e-4"))
    memory = results.get("memory", {})
    for r in memory.get("rows", []):
        if r["model"] != "resnet1202":
            per_image = f"{r['step_bytes_per_image'] / 2**20:.2f} MiB/img"
            rows.append(_row(f"memory {r['model']} b{r['batch_size']} {r['pipeline']}", per_image))
    if memory.get("checkpointing"):
        c = memory["checkpointing"]
        name = f"memory resnet1202 b{c['batch_size']} ckpt/plain peak"
        shown = f"{c['peak_fraction']:.2f} (step {c['step_fraction']:.2f})"
        if c["batch_size"] == 128:  # the target's batch; --quick measures batch 8
            rows.append(_row(name, shown, -c["peak_fraction"], -1 / 3, "< 0.33"))
        else:
            rows.append(_row(name + " (target is at b128)", shown))
    for r in results.get("procs", {}).get("rows", []):
        name = f"train {r['model']}: {r['procs']} processes / 1 (whole runs)"
        of_gemm = r["flop_fraction"][r["contenders"][1]]
        shown = f"{r['paired_ratio']:.2f}x" + ("" if of_gemm is None else f", {100 * of_gemm:.0f}% of GEMM")
        rows.append(_row(name, shown, r["paired_ratio"], 1.1 if r["model"] == "resnet20" else None))
    data = results.get("data", {})
    if "ratio" in data:
        name = "data: batches/s over train steps/s"
        rows.append(_row(name, f"{data['ratio']:.0f}x", data["ratio"], data["ratio_target"]))
    if data.get("folder_cache"):
        load = data["folder_cache"]["cache_load_s"]
        rows.append(_row("data: load the decoded JPEG cache", f"{load:.2f} s", -load, -2.0, "< 2 s"))
    for r in results.get("tta", {}).get("runs", []):
        for key, hit in r["reached"].items():
            value = "not reached" if hit is None else f"{hit['time_s'] / 60:.1f} min"
            rows.append(_row(f"time to {key}: {r['recipe']} ({r['budget_minutes']:g} min)", value))
    return rows


def _row(
    measure: str, shown: str, value: float = 0.0, target: float | None = None, text: str | None = None
) -> list[Any]:
    """A summary row; ``value >= target`` is "met" (negate both for upper limits)."""
    if target is None:
        return [measure, shown, "", ""]
    return [measure, shown, text or f">= {target:g}x", "yes" if value >= target else "NO"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated from {BENCHMARKS}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument(
        "--tta-minutes",
        default="40",
        help="time-to-accuracy budget per run in minutes, comma-separated for several (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    device = setup(args)
    chosen = [b for b in args.only.split(",") if b and b not in args.skip.split(",")]
    if args.quick and "tta" in chosen:
        chosen.remove("tta")
        print("time to accuracy skipped in --quick (hours on 2 cores): see benchmarks/README.md")
    out_dir = RESULTS_DIR / ("quick" if args.quick else "full")
    common = ["--threads", str(args.threads), "--device", args.device] + (["--quick"] if args.quick else [])
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        try:
            # bench_data (written separately) sets its own threads and has no --device; bench_procs
            # starts CPU processes of its own.
            procs = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
            extra = [] if name == "data" else procs if name == "procs" else common
            own = {"data": ["--quick"] if args.quick else [], "tta": ["--max-minutes", args.tta_minutes]}
            argv = [*extra, *own.get(name, []), "--json", str(out_dir / f"{name}.json")]
            results[name] = _module_main(name)(argv)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failures[name] = f"{type(exc).__name__}: {exc}"
        durations[name] = time.perf_counter() - start
        torch.set_num_threads(args.threads)  # a benchmark may have changed it
    rows = _summary_rows(results) + [[f"{n}: FAILED", msg[:60], "", "NO"] for n, msg in failures.items()]
    mode = "quick" if args.quick else "full"
    env = bench_environment(device)
    print_table(
        f"Summary ({mode}; {env['device']}, {env['cpu']}, {args.threads} threads)",
        ["measure", "value", "target", "met"],
        rows,
    )
    print("seconds per benchmark: " + ", ".join(f"{k} {v:.0f}" for k, v in durations.items()))
    save_json(
        out_dir / "summary.json",
        {"environment": env, "durations_s": durations, "failures": failures, "rows": rows},
    )
    print(f"results saved under {out_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
