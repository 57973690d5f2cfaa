"""Inference throughput (eval mode, images/s of the model's forward pass), ours against eager.

Baseline: the eager NCHW float32 model in eval mode under ``torch.no_grad()``, as usually written.
Ours: ``resnetlab.weights.folding.optimize_for_inference`` (BN folded into the preceding conv, eval,
channels_last) under ``torch.inference_mode()``; with ``torch.compile`` (inductor, weights frozen)
as a further variant, used as "ours" only where it measurably helps (>= 5% over the eager variant).
Both sides get the same prepared batch; the outputs must agree with the unfolded model within 1e-4
(max |ours - eager| / max |eager|). The BN statistics come from one training-mode pass over a batch,
so the folded scales are realistic rather than the identity of a fresh net.

Usage: ``python benchmarks/bench_infer.py [--quick] [--threads N] [--device D] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from baseline import baseline_eval_model, eval_batch
from common import (
    CIFAR_MEAN,
    CIFAR_STD,
    add_common_args,
    alternate,
    bench_environment,
    load_images,
    median,
    paired_ratio,
    print_table,
    save_json,
    setup,
)
from resnetlab.weights.folding import optimize_for_inference, relative_error

TARGET_RATIO, TOLERANCE, COMPILE_GAIN = 1.25, 1e-4, 1.05
# (model, image size, batch on CUDA and CPU, batch in CPU --quick)
CONFIGS = (
    ("resnet20", 32, 256, 256),
    ("resnet56", 32, 256, 256),
    ("resnet18", 224, 32, 8),
    ("resnet50", 224, 32, 8),
)


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BN's running statistics to those of batch ``x`` (one training-mode pass)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()(x)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def _forward(model: nn.Module, x: torch.Tensor, inference_mode: bool):
    def run() -> torch.Tensor:
        with torch.inference_mode() if inference_mode else torch.no_grad():
            return model(x)

    return run


def _max_error(model: nn.Module, reference: nn.Module, x: torch.Tensor, x_ours: torch.Tensor) -> float:
    """The folding check, with TF32 off so CUDA compares float32 with float32."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            return relative_error(model(x_ours), reference(x))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def bench_config(
    name: str, size: int, batch: int, device: torch.device, rounds: int, compile_ok: bool
) -> dict[str, Any]:
    """Eager baseline, our eager variant and (optionally) our compiled variant for one net."""
    images, _, source = load_images(batch, size)
    x = eval_batch(images, CIFAR_MEAN, CIFAR_STD).to(device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    baseline = baseline_eval_model(name, device)
    calibrate_bn(baseline, x)
    contenders = {"folded+channels_last": optimize_for_inference(baseline, channels_last=True)}
    compile_s = None
    if compile_ok:
        compiled = optimize_for_inference(baseline, channels_last=True, compile=True)
        start = time.perf_counter()
        _forward(compiled, x_cl, True)()
        compile_s = time.perf_counter() - start
        contenders["folded+channels_last+compile"] = compiled
    errors = {label: _max_error(m, baseline, x, x_cl) for label, m in contenders.items()}
    runners = {"baseline": _forward(baseline, x, False)}
    runners |= {label: _forward(m, x_cl, True) for label, m in contenders.items()}
    times = alternate(runners, warmup=1, rounds=rounds, device=device)
    rate = {k: batch / median(t) for k, t in times.items()}
    ours = "folded+channels_last"
    compiled_label = "folded+channels_last+compile"
    if compile_ok and paired_ratio(times[ours], times[compiled_label]) >= COMPILE_GAIN:
        ours = compiled_label
    return {
        "model": name,
        "image_size": size,
        "batch_size": batch,
        "data": source,
        "images_per_s": rate,
        "ours": ours,
        "ours_images_per_s": rate[ours],
        "baseline_images_per_s": rate["baseline"],
        "ratio": rate[ours] / rate["baseline"],
        "paired_ratio": paired_ratio(times["baseline"], times[ours]),
        "max_relative_error": errors,
        "outputs_match": all(e <= TOLERANCE for e in errors.values()),
        "compile_s": compile_s,
        "block_times_s": times,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the inference benchmark, print its table, optionally save JSON; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--models", default=",".join(c[0] for c in CONFIGS), help="comma-separated")
    parser.add_argument("--no-compile", action="store_true", help="leave the torch.compile variant out")
    args = parser.parse_args(argv)
    device = setup(args)
    quick_cpu = args.quick and device.type == "cpu"
    compile_ok = not args.no_compile and not quick_cpu
    rows = []
    for name, size, batch, batch_quick in CONFIGS:
        if name in args.models.split(","):
            b = batch_quick if quick_cpu else batch
            rows.append(bench_config(name, size, b, device, 3 if quick_cpu else 8, compile_ok))
    results = {
        "benchmark": "inference",
        "quick": args.quick,
        "environment": bench_environment(device),
        "targets": {"ratio": TARGET_RATIO, "model": "resnet20", "max_relative_error": TOLERANCE},
        "rows": rows,
    }
    print_table(
        "Inference throughput, images/s (eval; medians of alternating batches; paired = median of "
        "per-round ratios)",
        ["config", "eager", "folded+CL", "compiled", "ratio", "paired", "ours", "max rel err", "compile s"],
        [
            [
                f"{r['model']} {r['image_size']}px b{r['batch_size']}",
                r["baseline_images_per_s"],
                r["images_per_s"]["folded+channels_last"],
                r["images_per_s"].get("folded+channels_last+compile"),
                f"{r['ratio']:.2f}x",
                f"{r['paired_ratio']:.2f}x",
                "compiled" if r["ours"].endswith("compile") else "eager",
                f"{max(r['max_relative_error'].values()):.1e}",
                r["compile_s"],
            ]
            for r in rows
        ],
    )
    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
