"""The paper's CIFAR-10 schedule for several nets side by side on one GPU (Fig. 6 at 20/56 layers).

A thin command line over the engine's fleet (``resnetlab.engine.train_fleet``): every net trains
with the paper's recipe (SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at
50% and 75% of the run, 64k iterations unless they do not fit) on the same batches as ``resnetlab
train --seed S``, each into a run directory of its own written by the engine. On a GPU the engine
runs each net's whole step as one captured CUDA graph on its own stream (``--step auto``).

What this script adds: a probe that times the fleet in fp32 and in bf16 and fits the number of
iterations to ``--gpu-minutes`` (fp32 when the full 64,000 fit, else the precision that fits more),
the degradation record that ``resnetlab report OUT`` draws Fig. 6 from, a ResNet-50 throughput
probe, and ``--tar``. On the CPU (``--device cpu``) the same code runs eagerly: that is how it is
tested with a tiny budget.

    python benchmarks/paper_schedule_gpu.py --data cifar10 --data-dir DIR --out runs/gpu --gpu-minutes 8
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_write
from resnetlab.engine import TrainConfig, probe_fleet, train_fleet
from resnetlab.engine.distributed import device_name, select_device
from resnetlab.engine.rundir import environment
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.records import run_entries, write_record
from resnetlab.models import model_info
from resnetlab.recipes import get_recipe

PAPER_ITERATIONS = 64000
PROBE_STEPS = 30  # timed fleet steps per precision, after warm-up and capture
EVALUATIONS = 32  # test-set evaluations per run (every 2,000 iterations at the full schedule)
LOG_ROWS = 320  # training-error rows per run
RESNET50_DATA = "synthetic:512,64,224,1000"  # ImageNet-sized batches for the throughput probe


@dataclass(frozen=True)
class FleetJob:
    """What to train: the nets, their data, where, and how long."""

    nets: list[str]
    data: str
    data_dir: str | None
    out: Path
    seed: int
    device: str
    quiet: bool

    def configs(self, precision: str, iterations: int) -> list[TrainConfig]:
        """One engine config per net: the paper's recipe, ``iterations`` long, in ``precision``."""
        return [
            TrainConfig(
                model=name,
                dataset=self.data,
                data_dir=self.data_dir,
                recipe=get_recipe("cifar-paper"),
                out=self.out / name,
                seed=self.seed,
                device=self.device,
                precision=precision,
                memory_format="channels_last",
                iterations=iterations,
                log_every=max(1, iterations // LOG_ROWS),
                eval_every=max(1, iterations // EVALUATIONS),
                eval_limit=10000,  # the whole CIFAR test set at every evaluation
                quiet=self.quiet,
            )
            for name in self.nets
        ]


def choose(probes: list[dict[str, Any]], budget_s: float) -> tuple[str, int]:
    """(precision, iterations): fp32 when the full schedule fits, else the precision that fits more."""
    fits = {p["precision"]: int(budget_s / p["fleet_step_s"]) for p in probes}
    if fits.get("fp32", 0) >= PAPER_ITERATIONS:
        return "fp32", PAPER_ITERATIONS
    best = max(fits, key=fits.get)
    return best, min(PAPER_ITERATIONS, fits[best])


def degradation_record(job: FleetJob, report: dict[str, Any]) -> Path | None:
    """Write ``OUT/degradation.json`` over the fleet's plain/residual CIFAR runs, so that
    ``resnetlab report OUT`` draws Fig. 6 with the paper's verdicts from the metrics files."""
    nets = {}
    for name in job.nets:
        info = model_info(name)
        if info.family == "cifar" and name.startswith(("plain", "resnet")):
            nets[CifarNet(info.depth, name.startswith("resnet"))] = job.out / name
    if not nets:
        return None
    summary = json.loads((job.out / job.nets[0] / "summary.json").read_text())
    record = {
        "experiment": "degradation",
        **environment(summary["device"], 1),
        "torch_threads": torch.get_num_threads(),
        "dataset": job.data,
        "seeds": 1,
        "batch_size": summary["batch_size"],
        "budget": {
            "iterations": report["chosen"]["iterations"],
            "minutes": None,
            "requested_iterations": None,
        },
        "runs": run_entries(job.out, {(net, 0): path for net, path in nets.items()}),
        "runs_wall_time_s": report["train_s"],
        "wall_time_s": report["total_s"],
        "depths": sorted({net.depth for net in nets}),
        "trained_with": f"benchmarks/paper_schedule_gpu.py: {len(job.nets)} nets as one engine fleet",
    }
    return write_record(job.out, record)


def resnet50_throughput(device: str, steps: int, out: Path) -> dict[str, Any]:
    """Training images/s of ResNet-50 at 224x224, batch 256, bf16, channels_last, on the engine's step."""
    config = TrainConfig(
        model="resnet50",
        dataset=RESNET50_DATA,
        recipe=get_recipe("imagenet-paper"),
        out=out / "resnet50-probe",
        device=device,
        precision="bf16",
        memory_format="channels_last",
        iterations=steps,
        quiet=True,
    )
    return probe_fleet([config], steps)


def pack(out: Path, tar: Path | None) -> None:
    """Replace ``tar`` atomically with the current contents of ``out``."""
    if tar is None:
        return
    tmp = tar.with_name(tar.name + ".tmp")
    with tarfile.open(tmp, "w") as packed:
        packed.add(out, arcname=out.name)
    os.replace(tmp, tar)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset spec, e.g. cifar10 or folder:PATH")
    p.add_argument("--data-dir", help="where datasets are found and decoded caches go")
    p.add_argument("--nets", default="plain20,plain56,resnet20,resnet56")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpu-minutes", type=float, default=8.0, help="training budget after the probe")
    p.add_argument("--iterations", type=int, help="skip the probe: train this many (with --precision)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--probe-steps", type=int, default=PROBE_STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--resnet50-steps", type=int, default=20, help="0 skips the ResNet-50 throughput")
    p.add_argument("--tar", type=Path, help="also pack --out into this .tar file")
    p.add_argument("--quiet", action="store_true", help="no training progress (the probes and results print)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    job = FleetJob(
        args.nets.split(","), args.data, args.data_dir, args.out, args.seed, args.device, args.quiet
    )
    device = select_device(args.device)
    report: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__}
    if args.iterations:
        report["probes"], chosen = [], (args.precision, args.iterations)
    else:
        report["probes"] = [
            probe_fleet(job.configs(p, PAPER_ITERATIONS), args.probe_steps) for p in ("fp32", "bf16")
        ]
        for probe in report["probes"]:
            print(json.dumps(probe), flush=True)
        chosen = choose(report["probes"], args.gpu_minutes * 60)
    report["chosen"] = {"precision": chosen[0], "iterations": chosen[1]}
    print(f"training {job.nets} for {chosen[1]} iterations, {chosen[0]}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "fleet.json", json.dumps(report, indent=1) + "\n")
    started = time.perf_counter()
    results = train_fleet(job.configs(*chosen))
    report["train_s"] = time.perf_counter() - started
    report["finals"] = {r.summary["model"]: r.summary["final"] for r in results}
    report["step"] = {k: results[0].summary[k] for k in ("step", "step_reason")}
    if device.type == "cuda" and args.resnet50_steps:
        report["resnet50"] = resnet50_throughput(args.device, args.resnet50_steps, args.out)
    report["total_s"] = time.perf_counter() - t0
    degradation_record(job, report)
    atomic_write(args.out / "fleet.json", json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("chosen", "step", "train_s", "finals", "total_s")}), flush=True)
    pack(args.out, args.tar)


if __name__ == "__main__":
    main()
