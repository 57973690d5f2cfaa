"""Training throughput (images/s, whole step with data and augmentation) against the machine's GEMM rate.

Ours: uint8 images resident on the device, pad-crop-flip and normalisation per batch on the device
(``TensorBatches``), ``resnetlab.engine.step.TrainStep`` in the mode ``resnetlab train`` picks by
default (``--precision auto``: bf16 autocast and channels_last where the device computes bf16
natively; float32 elsewhere, on a CPU channels_last for nets without a strided 1x1 convolution),
compiled as a run of the paper's length is (on a CPU with a C++ compiler, unless ``--quick`` or
``--no-compile``; on CUDA as the stand-in for the captured graph). Baseline:
``benchmarks/baseline.py`` (PIL per-sample transforms, DataLoader, eager NCHW float32), the
conventional loop. Both use SGD (lr 0.1, momentum 0.9, weight
decay 1e-4) and alternate block by block.

ResNet-20 and ResNet-56 also run the contenders side by side, each with our data pipeline: float32
NCHW, float32 channels_last, bf16 autocast + channels_last, and torch.compile (inductor) in float32
and in bf16. bf16 is left out of ``--quick`` on a CPU without native bf16 (about 11x slower there);
compile is left out of ``--quick`` on a CPU (minutes) and, with the reason printed, where a CPU has
no C++ compiler for inductor. Inductor's freezing (weights folded in as constants) applies to
inference only: a training step updates the weights, so training compiles without it
(``bench_infer.py`` measures frozen inference).

The ceiling: a 4096x4096 matmul in each precision the device computes natively (float32 always;
bf16 where ``resnetlab.engine.precision.native_bf16`` says so) takes its turn in the same
alternating rounds, on the same threads. A step's FLOPs are counted from the layer shapes
(``resnetlab.analysis.counts.train_step_flops``: forward, weight and input gradients of every conv
and linear layer, without the input gradient of the first conv); each contender's "fraction of the
GEMM rate" is the paired ratio (per round) of its FLOP rate to the matmul's in its training
precision: float32 contenders against the float32 matmul, bf16 ones against the bf16 matmul.

Usage: ``python benchmarks/bench_train.py [--quick] [--threads N] [--device D] [--models a,b]
[--no-compile] [--baseline-workers W]``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from baseline import BaselineTrain, pick_workers
from common import (
    CIFAR_MEAN,
    CIFAR_STD,
    MATMUL_N,
    add_common_args,
    alternate,
    bench_environment,
    forever,
    load_images,
    matmul_runner,
    median,
    paired_ratio,
    print_table,
    save_json,
    setup,
    train_setup,
)
from resnetlab.analysis.counts import count_macs, meta_model, train_step_flops
from resnetlab.data.augment import Normalizer
from resnetlab.data.loader import ImageSet, TensorBatches
from resnetlab.engine.compiling import NO_COMPILER, choose_compile, cxx_compiler
from resnetlab.engine.precision import choose_mode, native_bf16
from resnetlab.engine.step import TrainStep
from resnetlab.models import build_model
from resnetlab.recipes import get_recipe

# ResNet-20 at batch 128, default flags against the conventional pipeline, data included (issue 31's
# targets): 2.2x where the CPU computes bf16 natively, 1.35x elsewhere; and the default step at 60%
# of the machine's GEMM rate in its training precision.
TARGET_RATIO_BF16, TARGET_RATIO_FP32, TARGET_FLOP_FRACTION = 2.2, 1.35, 0.6
CIFAR_NETS = ("resnet20", "resnet56")  # the nets every contender runs for
PAPER_RUN_ITERATIONS = get_recipe("cifar-paper").iterations  # the default run whose step is timed


@dataclass(frozen=True)
class Config:
    """One row: a registered net, its input size and batch sizes (CUDA, CPU, CPU --quick)."""

    model: str
    size: int
    batch_cuda: int
    batch_cpu: int
    batch_quick: int


CONFIGS = (
    Config("resnet20", 32, 128, 128, 128),
    Config("resnet56", 32, 128, 128, 128),
    Config("resnet18", 224, 128, 16, 8),
    Config("resnet50", 224, 64, 16, 8),
)


@dataclass(frozen=True)
class StepSettings:
    """How our TrainStep runs: memory format, autocast and compilation."""

    channels_last: bool
    amp: str | None
    compile: bool

    @property
    def precision(self) -> str:
        return self.amp or "fp32"

    @property
    def label(self) -> str:
        parts = ["channels_last" if self.channels_last else "NCHW", self.precision]
        return "+".join([*parts, "compile"] if self.compile else parts)


def ours_settings(device: torch.device, model: str, compile_ok: bool = False) -> StepSettings:
    """What `resnetlab train` runs by default for ``model`` on ``device`` in a run of the paper's
    length: its auto mode (which looks at the net's layers for the layout), compiled on a CPU where
    auto compiles such a run and ``compile_ok`` lets the benchmark compile; compiled on CUDA, the
    stand-in here for the captured graph of `resnetlab train`."""
    mode = choose_mode(device, model=meta_model(model))
    if device.type == "cpu":
        paper_run = choose_compile(None, device, PAPER_RUN_ITERATIONS, world_size=1, recompute=False)
        compile = compile_ok and paper_run.compile
    else:
        compile = device.type == "cuda"
    return StepSettings(channels_last=mode.channels_last, amp=mode.amp, compile=compile)


def compile_check(device: torch.device, asked: bool, quick: bool) -> tuple[bool, str]:
    """Whether the torch.compile contenders run, and why not when they do not."""
    if not asked:
        return False, "--no-compile"
    if device.type == "cpu":
        if quick:
            return False, "--quick on a CPU (compiling takes minutes)"
        if cxx_compiler() is None:
            return False, NO_COMPILER
    return True, ""


class OursTrain:
    """Our pipeline: device-resident batches with on-device augmentation feeding a TrainStep."""

    def __init__(
        self,
        model_name: str,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device,
        settings: StepSettings,
        seed: int = 0,
        checkpoint_activations: bool = False,
    ) -> None:
        model, optimizer = train_setup(model_name, device, seed)
        model.checkpoint_activations = checkpoint_activations
        self.step = TrainStep(
            model,
            optimizer,
            amp=settings.amp,
            channels_last=settings.channels_last,
            compile=settings.compile,
        )
        # The baseline's Normalize constants, so both sides compute the same inputs.
        normalizer = Normalizer(
            torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None], "per-channel"
        )
        data = ImageSet(images, labels)
        batches = TensorBatches(data, batch_size, normalizer, train=True, device=device, seed=seed)
        self.batches = forever(batches.epoch)

    def run(self, steps: int) -> None:
        """``steps`` training steps, each drawing and augmenting its batch (TrainStep fixes its layout)."""
        for _ in range(steps):
            self.step.step(*next(self.batches))


def _plan(quick: bool, device: torch.device, size: int) -> dict[str, int]:
    """Steps per timed block, timed rounds and images held, for one config."""
    if quick and device.type == "cpu":  # more, shorter rounds where steps are cheap
        return {"steps": 1, "rounds": 7 if size <= 32 else 3, "batches_held": 4}
    return {"steps": 3, "rounds": 7, "batches_held": 8}


def contenders(device: torch.device, quick: bool, compile_ok: bool, model: str) -> list[StepSettings]:
    """The step variants of a CIFAR net: fp32 NCHW and channels_last, bf16 + channels_last (not in
    --quick where bf16 is emulated: ~11x slower), and compile in fp32 (in the layout ``auto`` gives
    the net in fp32) and in bf16 + channels_last."""
    bf16 = native_bf16(device)[0] or not (quick and device.type == "cpu")
    out = [StepSettings(False, None, False), StepSettings(True, None, False)]
    if bf16:
        out.append(StepSettings(True, "bf16", False))
    if compile_ok:
        fp32 = choose_mode(device, "fp32", model=meta_model(model))
        out.append(StepSettings(fp32.channels_last, None, True))
        if bf16:
            out.append(StepSettings(True, "bf16", True))
    return out


def gemm_dtypes(device: torch.device) -> dict[str, torch.dtype]:
    """The precisions this device computes natively, each with the matmul dtype that measures it."""
    dtypes = {"fp32": torch.float32}
    if native_bf16(device)[0]:
        dtypes["bf16"] = torch.bfloat16
    return dtypes


def flop_fractions(
    times: dict[str, list[float]],
    precisions: dict[str, str],
    gemm_times: dict[str, list[float]],
    block_flops: float,
    gemm_flops: float,
) -> dict[str, float | None]:
    """Each contender's FLOP rate as a fraction of the GEMM rate in its precision, paired by round:
    ``block_flops`` per timed block against ``gemm_flops`` per matmul call. None where the device has
    no native GEMM in that precision (bf16 emulated on a CPU without AVX512-BF16 or AMX)."""
    return {
        label: paired_ratio(gemm_times[precisions[label]], t) * block_flops / gemm_flops
        if precisions[label] in gemm_times
        else None
        for label, t in times.items()
    }


def bench_config(
    cfg: Config,
    device: torch.device,
    plan: dict[str, int],
    batch: int,
    workers: int | None,
    variants: list[StepSettings],
    compile_ok: bool = False,
) -> dict[str, Any]:
    """Ours (and its variants) against the baseline and the GEMMs for one config; the result row.
    ``compile_ok``: the benchmark may compile (the default of a paper-length CPU run compiles)."""
    images, labels, source = load_images(plan["batches_held"] * batch, cfg.size)
    steps = plan["steps"]
    make_baseline = partial(
        BaselineTrain, cfg.model, images, labels, batch, device=device, mean=CIFAR_MEAN, std=CIFAR_STD
    )
    worker_times = None
    if workers is None:
        baseline, worker_times = pick_workers(make_baseline, device, steps=steps, rounds=2)
        workers = baseline.loader.num_workers
    else:
        baseline = make_baseline(workers)
    ours = ours_settings(device, cfg.model, compile_ok)
    settings = {s.label: s for s in [*variants, ours]}  # the default in its place among them
    pipelines = {
        label: OursTrain(cfg.model, images, labels, batch, device, s) for label, s in settings.items()
    }
    gemms = {f"gemm {p}": matmul_runner(device, dtype=d) for p, d in gemm_dtypes(device).items()}
    runners = {"baseline": partial(baseline.run, steps), **gemms}
    compile_s: dict[str, float] = {}
    for label, pipe in pipelines.items():
        if settings[label].compile:  # the first call compiles: time it apart from the warm-up
            start = time.perf_counter()
            pipe.run(1)
            compile_s[label] = time.perf_counter() - start
        runners[label] = partial(pipe.run, steps)
    times = alternate(runners, warmup=1, rounds=plan["rounds"], device=device)
    baseline.close()
    gemm_times = {name.removeprefix("gemm "): times.pop(name) for name in gemms}
    rate = {name: batch * steps / median(t) for name, t in times.items()}
    macs = count_macs(build_model(cfg.model), cfg.size)
    step_flops = train_step_flops(build_model(cfg.model), cfg.size)  # per image
    # FLOPs of one timed block, and of one matmul call: their paired ratio is the fraction.
    block_flops, gemm_flops = step_flops * batch * steps, 2 * MATMUL_N**3
    precisions = {label: settings[label].precision if label in settings else "fp32" for label in times}
    fractions = flop_fractions(times, precisions, gemm_times, block_flops, gemm_flops)
    return {
        "model": cfg.model,
        "image_size": cfg.size,
        "batch_size": batch,
        "data": source,
        "baseline_workers": workers,
        "worker_choice_s_per_step": worker_times,
        "ours_settings": ours.label,
        "mode_reason": choose_mode(device, model=meta_model(cfg.model)).reason,
        "target_ratio": TARGET_RATIO_BF16 if ours.amp == "bf16" else TARGET_RATIO_FP32,
        "matmul_dtype": "bfloat16" if ours.amp == "bf16" else "float32",
        "forward_macs_per_image": macs,
        "train_flops_per_image": step_flops,
        "precisions": precisions,
        "images_per_s": rate,
        "ours_images_per_s": rate[ours.label],
        "baseline_images_per_s": rate["baseline"],
        "ratio": rate[ours.label] / rate["baseline"],
        "paired_ratio": paired_ratio(times["baseline"], times[ours.label]),
        "paired_vs_baseline": {k: paired_ratio(times["baseline"], t) for k, t in times.items()},
        "gemm_flops": {p: gemm_flops / median(t) for p, t in gemm_times.items()},
        "matmul_flops": gemm_flops / median(gemm_times.get(ours.precision, gemm_times["fp32"])),
        "ours_flops": step_flops * rate[ours.label],
        "baseline_flops": step_flops * rate["baseline"],
        "flop_fraction": fractions,
        "ours_flop_fraction": fractions[ours.label],
        "gemm_times_s": gemm_times,
        "compile_s": {k: v - median(times[k]) / steps for k, v in compile_s.items()},
        "block_times_s": times,
        "steps_per_block": steps,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the training benchmark, print its tables, optionally save JSON; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--models", default=",".join(c.model for c in CONFIGS), help="comma-separated")
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="leave the torch.compile contenders out (on by default "
        "except --quick on CPU, where compiling takes minutes)",
    )
    parser.add_argument(
        "--baseline-workers",
        type=int,
        help="the baseline DataLoader's workers (default: measured, the fastest of 0, 1, 2, ...)",
    )
    args = parser.parse_args(argv)
    device = setup(args)
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - {c.model for c in CONFIGS})
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (from {', '.join(c.model for c in CONFIGS)})")
    compile_ok, why_not = compile_check(device, not args.no_compile, args.quick)
    if not compile_ok:
        print(f"torch.compile contenders skipped: {why_not}")
    rows: list[dict[str, Any]] = []
    workers_by_size: dict[int, int] = {}
    if args.baseline_workers is not None:
        workers_by_size = {c.size: args.baseline_workers for c in CONFIGS}
    for cfg in CONFIGS:
        if cfg.model not in wanted:
            continue
        batch = cfg.batch_cuda if device.type == "cuda" else cfg.batch_quick if args.quick else cfg.batch_cpu
        variants = contenders(device, args.quick, compile_ok, cfg.model) if cfg.model in CIFAR_NETS else []
        plan = _plan(args.quick, device, cfg.size)
        mode = choose_mode(device, model=meta_model(cfg.model))
        default = ours_settings(device, cfg.model, compile_ok).label
        print(f"  {cfg.model}: default {default} ({mode.reason})", flush=True)
        # The worker count is measured once per image size (on its first, lighter model).
        row = bench_config(cfg, device, plan, batch, workers_by_size.get(cfg.size), variants, compile_ok)
        workers_by_size.setdefault(cfg.size, row["baseline_workers"])
        rows.append(row)
        print(
            f"  {cfg.model}: ours {row['ours_images_per_s']:.1f} img/s, baseline "
            f"{row['baseline_images_per_s']:.1f} img/s, ratio {row['ratio']:.2f}",
            flush=True,
        )
    results = {
        "benchmark": "train",
        "quick": args.quick,
        "environment": bench_environment(device),
        "compile": compile_ok,
        "compile_skipped": why_not or None,
        "targets": {
            "ratio_native_bf16": TARGET_RATIO_BF16,
            "ratio_fp32": TARGET_RATIO_FP32,
            "flop_fraction": TARGET_FLOP_FRACTION,
            "model": "resnet20",
        },
        "rows": rows,
    }
    report(results)
    if args.json:
        save_json(args.json, results)
    return results


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.0f}%"


def contender_rows(row: dict[str, Any]) -> list[list[Any]]:
    """One table row per contender of a result row: label (the default marked), img/s, paired ratio
    to the conventional loop, training precision, fraction of the GEMM rate in it, compile seconds."""
    out = []
    for label, rate in row["images_per_s"].items():
        shown = f"{label} (default)" if label == row["ours_settings"] else label
        if label == "baseline":
            shown = "conventional loop (baseline)"
        out.append(
            [
                shown,
                rate,
                f"{row['paired_vs_baseline'][label]:.2f}x",
                row["precisions"][label],
                _percent(row["flop_fraction"][label]),
                row["compile_s"].get(label),
            ]
        )
    return out


def report(results: dict[str, Any]) -> None:
    """Print the summary table (default against the conventional loop), then every net's contenders."""
    table = [
        [
            f"{r['model']} {r['image_size']}px b{r['batch_size']}",
            r["baseline_images_per_s"],
            r["ours_images_per_s"],
            f"{r['ratio']:.2f}x",
            f"{r['paired_ratio']:.2f}x",
            r["baseline_workers"],
            f"{r['train_flops_per_image'] / 1e6:.0f}",
            f"{r['ours_flops'] / 1e9:.1f}",
            ", ".join(f"{p} {v / 1e9:.0f}" for p, v in r["gemm_flops"].items()),
            _percent(r["ours_flop_fraction"]),
        ]
        for r in results["rows"]
    ]
    print_table(
        "Training throughput, images/s, data included (medians of alternating blocks; paired = median of "
        "per-round ratios; fraction = of a 4096^2 matmul in ours' precision, run in the same rounds)",
        [
            "config",
            "baseline",
            "ours",
            "ratio",
            "paired",
            "workers",
            "MFLOP/img",
            "ours GFLOP/s",
            "GEMM GFLOP/s",
            "fraction",
        ],
        table,
    )
    for r in results["rows"]:
        if len(r["images_per_s"]) <= 2:
            continue
        gemm = ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in r["gemm_flops"].items())
        print_table(
            f"{r['model']} b{r['batch_size']}, every contender with our data pipeline except the baseline "
            f"({r['train_flops_per_image'] / 1e6:.0f} MFLOP per image trained; GEMM: {gemm})",
            ["contender", "images/s", "vs conventional", "precision", "of GEMM", "compile s"],
            contender_rows(r),
        )


if __name__ == "__main__":
    main()
