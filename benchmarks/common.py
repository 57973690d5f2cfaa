"""What every benchmark shares: threads and device, alternating timing, the matmul rate, memory, I/O.

Timing discipline: each contender runs a *block* of steps, contenders alternate block by block after
an untimed warm-up, and the statistic is the median block time. Alternation makes slow drifts of the
machine (other processes, thermal state) hit both sides alike, so the *ratio* is what to trust on a
shared machine. A CUDA block ends with one synchronisation, never one per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.engine.distributed import device_name
from resnetlab.engine.rundir import environment
from resnetlab.models import build_model

REPO = Path(__file__).resolve().parents[1]
CIFAR_JPEG = REPO.parent / "shared" / "data" / "cifar10-jpeg"
RESULTS_DIR = REPO / "bench-results"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--quick, --threads, --device and --json, the same in every benchmark."""
    parser.add_argument("--quick", action="store_true", help="fewer steps and smaller batches on CPU")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch intra-op threads (default: the CPUs this process may use, %(default)s here)",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu or cuda")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results here")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and pick --device; print both so every table says what it ran on."""
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    print(
        f"device: {device_name(device)}; CPU: {cpu_name()}; torch {torch.__version__}; "
        f"{torch.get_num_threads()} threads"
    )
    load = load_average()
    if device.type == "cpu" and load and load[0] >= 1.0 and os.environ.get("OMP_WAIT_POLICY", "") == "":
        # Measured here: ResNet-20 training at 2 threads ran 4x slower with libgomp's default
        # spin-waiting than with PASSIVE while another process kept one core busy.
        print(
            f"note: load average {load[0]:.1f} before starting; on a shared CPU set OMP_WAIT_POLICY=PASSIVE "
            "(spinning OpenMP threads wait for descheduled ones at every op)"
        )
    return device


def cpu_name() -> str:
    """The CPU's model name with the number of CPUs this process may use (the engine's
    ``device_name`` says only "cpu")."""
    model = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({len(os.sched_getaffinity(0))} CPUs)"


def bench_environment(device: torch.device) -> dict[str, Any]:
    """What a result depends on: the engine's run environment (versions, device, code commit, command
    line), the CPU, the Python version, threads and how busy the machine was."""
    return environment(device_name(device), 1) | {
        "cpu": cpu_name(),
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": load_average(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def load_average() -> list[float]:
    """The 1/5/15-minute load averages: above the CPU count, other work competed for the cores."""
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(
    runners: dict[str, Callable[[], Any]], *, warmup: int, rounds: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each runner: ``warmup`` untimed calls each, then ``rounds`` alternating
    timed calls (the starting contender rotates each round so neither always goes first)."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    sync(device)
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median (the statistic every table reports)."""
    return statistics.median(values)


def paired_ratio(slow: Sequence[float], fast: Sequence[float]) -> float:
    """Median over rounds of ``slow[i] / fast[i]``: each round's pair ran back to back, so a busy
    spell of the machine cancels out of the ratio instead of landing on one side's median."""
    return median([s / f for s, f in zip(slow, fast, strict=True)])


MATMUL_N = 4096


def matmul_runner(
    device: torch.device, n: int = MATMUL_N, dtype: torch.dtype = torch.float32
) -> Callable[[], Any]:
    """One ``n`` x ``n`` matmul in ``dtype`` (2 n^3 FLOPs) per call, to alternate with the contenders.

    TF32 is switched off for the call: it would inflate the CUDA rate beyond float32.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run() -> torch.Tensor:
        allow = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.no_grad():
                return a @ b
        finally:
            torch.backends.cuda.matmul.allow_tf32 = allow

    return run


def matmul_flops(device: torch.device, n: int = MATMUL_N, repeats: int = 3) -> float:
    """float32 FLOP/s of an ``n`` x ``n`` matmul, median of ``repeats`` after a warm-up."""
    times = alternate({"mm": matmul_runner(device, n)}, warmup=1, rounds=repeats, device=device)["mm"]
    return 2 * n**3 / median(times)


def proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status in bytes: VmRSS (resident now) or VmHWM (peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def load_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` uint8 images (N, 3, size, size), labels and where they came from.

    32x32: the first ``n / 10`` training JPEGs of each CIFAR-10 class when the shared folder is here
    (decoded with Pillow), otherwise random pixels. Larger sizes: random pixels (throughput does not
    depend on the content; decoding ImageNet is bench_data's subject).
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    train = CIFAR_JPEG / "train"
    if size == 32 and train.is_dir():
        from PIL import Image

        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        files = {c: sorted((train / c).iterdir()) for c in classes}
        arrays = []
        for i, label in enumerate(labels.tolist()):
            with Image.open(files[classes[label]][i // len(classes)]) as img:
                arrays.append(np.asarray(img.convert("RGB")))
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        return images, labels, f"{n} CIFAR-10 JPEGs from {CIFAR_JPEG}"
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return images, labels, f"{n} random {size}x{size} images"


def forever(make_epoch: Callable[[int], Iterator[Any]]) -> Iterator[Any]:
    """Chain epochs 0, 1, 2, ... of an epoch-wise iterator."""
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for k, row in enumerate(cells):
        line = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  " + "  ".join(line))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON atomically (temp file, fsync, rename): no half-written result files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train_setup(
    model_name: str, device: torch.device, seed: int = 0
) -> tuple[torch.nn.Module, torch.optim.SGD]:
    """The net in train mode and its SGD (lr 0.1, momentum 0.9, weight decay 1e-4), the same for every
    pipeline: seeded alike, so each side starts from the same weights."""
    torch.manual_seed(seed)
    model = build_model(model_name).to(device).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
