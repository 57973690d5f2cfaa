"""The paper's CIFAR-10 schedule for several nets side by side on one GPU (Fig. 6 at 20/56 layers).

Every net trains with the paper's recipe (SGD, momentum 0.9, weight decay 1e-4, batch 128, lr 0.1
divided by 10 at 50% and 75% of the run, 64k iterations unless the probe says they do not fit) on
the same data order and augmentation as ``resnetlab train --seed S`` (the library's own
``TensorBatches`` draws, replayed from per-epoch tables on the GPU).

Why it is fast: a whole training step (batch gather, crop/flip, normalisation, forward, backward,
SGD update, running loss/accuracy sums) is one captured CUDA graph per net, so the CPU issues one
launch per step instead of hundreds of small kernels, and the nets' graphs run on their own CUDA
streams, so small kernels of different nets overlap on the GPU. channels_last throughout; the probe
times fp32 (TF32 convolutions, PyTorch's cuDNN default) and bf16 autocast and keeps fp32 when the
schedule fits, since bf16 only pays when it buys iterations.

It starts with a short probe that times the whole fleet, then fits the number of iterations to
``--gpu-minutes`` (the full 64,000 when they fit). On the CPU (``--device cpu``) the same code runs
eagerly without graphs or streams: that is how it is tested with a tiny budget.

Output (``--out``): one run directory per net (``metrics.jsonl`` in the trainer's row format,
``checkpoint.pt`` with the weights and preprocessing that ``resnetlab eval/export`` read,
``summary.json``), ``fleet.json`` (probe, choices, timings, throughput) and, with ``--tar``, all of
it packed in one file.

    python benchmarks/paper_schedule_gpu.py --data folder:PATH --out runs/gpu --gpu-minutes 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnetlab.analysis.counts import count_params
from resnetlab.atomic import atomic_write
from resnetlab.data.augment import Normalizer, apply_crop_flip, draw_crop_flip
from resnetlab.data.datasets import load_dataset
from resnetlab.data.loader import TensorBatches, seeded_generator
from resnetlab.engine.checkpoint import save_checkpoint
from resnetlab.engine.evaluate import evaluate
from resnetlab.engine.rundir import environment, write_summary
from resnetlab.engine.schedules import LRSchedule
from resnetlab.engine.step import at_least_fp32
from resnetlab.experiments.common import Net as PaperNet
from resnetlab.experiments.common import run_entries, write_record
from resnetlab.models import build_model, model_info
from resnetlab.recipes import get_recipe

PAPER_ITERATIONS = 64000
PROBE_STEPS = 30  # timed fleet steps per precision, after warm-up and capture
EVALUATIONS = 32  # test-set evaluations per run (every 2,000 iterations at the full schedule)
LOG_ROWS = 320  # training-error rows per run


@dataclass
class Net:
    """One net of the fleet: model, SGD state, its stream, graph and device-side counters."""

    name: str
    model: torch.nn.Module
    params: list[torch.Tensor]
    momentum: list[torch.Tensor]
    lr: torch.Tensor  # 0-dim, read by the captured update
    step_index: torch.Tensor  # 0-dim int64: the batch of the epoch the next step takes
    loss_sum: torch.Tensor
    correct_sum: torch.Tensor
    stream: torch.cuda.Stream | None = None
    graph: torch.cuda.CUDAGraph | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    schedule: LRSchedule | None = None


class EpochTables:
    """The batches of one epoch as device tables: image index, crop offset and flip of every slot.

    Filled from the library's own generators (``TensorBatches`` of the same seed gives the same
    batches), so a step only needs its batch number to gather and augment its images.
    """

    def __init__(self, n_images: int, batch: int, seed: int, device: torch.device) -> None:
        self.n, self.batch, self.seed = n_images, batch, seed
        self.steps = n_images // batch
        slots = self.steps * batch
        self.index = torch.zeros(slots, dtype=torch.int64, device=device)
        self.offsets = torch.zeros(slots, 2, dtype=torch.int64, device=device)
        self.flips = torch.zeros(slots, dtype=torch.bool, device=device)

    def fill(self, epoch: int) -> None:
        shuffle = seeded_generator(self.seed, epoch)
        order = torch.randperm(self.n, generator=shuffle)[: self.steps * self.batch]
        draws = [draw_crop_flip(self.batch, seeded_generator(self.seed, epoch, s)) for s in range(self.steps)]
        self.index.copy_(order, non_blocking=False)
        self.offsets.copy_(torch.cat([d[0] for d in draws]))
        self.flips.copy_(torch.cat([d[1] for d in draws]))


def sgd_update(net: Net, grads: list[torch.Tensor], momentum: float, weight_decay: float) -> None:
    """torch.optim.SGD's update (weight decay added to the gradient, then momentum), with a tensor lr
    so that a captured graph follows the schedule. A zero buffer makes the first step plain SGD,
    as torch's lazily created buffer does."""
    with torch.no_grad():
        torch._foreach_add_(grads, net.params, alpha=weight_decay)
        torch._foreach_mul_(net.momentum, momentum)
        torch._foreach_add_(net.momentum, grads)
        torch._foreach_add_(net.params, torch._foreach_mul(net.momentum, net.lr), alpha=-1.0)


def train_step(
    net: Net,
    images: torch.Tensor,
    labels: torch.Tensor,
    tables: EpochTables,
    normalizer: Normalizer,
    amp: bool,
    recipe: Any,
) -> None:
    """One step of ``net`` on batch ``net.step_index`` of the epoch tables, all on the device."""
    b = tables.batch
    slots = net.step_index * b + torch.arange(b, device=images.device)
    idx = tables.index[slots]
    x = apply_crop_flip(images[idx], tables.offsets[slots], tables.flips[slots])
    x = normalizer(x).contiguous(memory_format=torch.channels_last)
    y = labels[idx]
    with torch.autocast(images.device.type, torch.bfloat16, enabled=amp, cache_enabled=False):
        logits = net.model(x)
    loss = F.cross_entropy(at_least_fp32(logits), y)
    grads = torch.autograd.grad(loss, net.params)
    sgd_update(net, list(grads), recipe.momentum, recipe.weight_decay)
    with torch.no_grad():
        net.loss_sum += loss.detach()
        net.correct_sum += (logits.detach().argmax(1) == y).sum()
        net.step_index += 1


def build_net(name: str, seed: int, device: torch.device, lr: float) -> Net:
    torch.manual_seed(seed)  # the same initial weights as `resnetlab train --seed`
    model = build_model(name).to(device).to(memory_format=torch.channels_last).train()
    params = list(model.parameters())
    zeros = lambda: torch.zeros((), device=device)  # noqa: E731
    return Net(
        name=name,
        model=model,
        params=params,
        momentum=[torch.zeros_like(p) for p in params],
        lr=torch.full((), lr, device=device),
        step_index=torch.zeros((), dtype=torch.int64, device=device),
        loss_sum=zeros(),
        correct_sum=zeros(),
    )


class Fleet:
    """Several nets trained in lockstep on the same batches."""

    def __init__(self, names: list[str], data: dict[str, Any], args: argparse.Namespace, amp: bool) -> None:
        self.args, self.amp, self.data = args, amp, data
        self.device = data["images"].device
        self.cuda = self.device.type == "cuda"
        self.recipe = get_recipe("cifar-paper")
        self.tables = EpochTables(len(data["labels"]), self.recipe.batch_size, args.seed, self.device)
        self.nets = [build_net(n, args.seed, self.device, self.recipe.lr) for n in names]

    def _step(self, net: Net) -> None:
        d = self.data
        train_step(net, d["images"], d["labels"], self.tables, d["normalizer"], self.amp, self.recipe)

    def capture(self) -> str | None:
        """Warm up (cuDNN autotuning, allocations) on side streams, then capture each net's step;
        returns None, or why the fleet runs eagerly (a failed capture falls back, never stops).

        The warm-up steps change weights, statistics and counters, so all are put back afterwards."""
        if not self.cuda:
            return "not on a GPU"
        torch.backends.cudnn.benchmark = True
        saved = [[t.detach().clone() for t in net.model.state_dict().values()] for net in self.nets]
        why = None
        try:
            self._capture()
        except RuntimeError as exc:
            for net in self.nets:
                net.graph = net.stream = None
            why = f"capture failed, eager: {str(exc).splitlines()[0]}"
        torch.cuda.synchronize()
        for net, state in zip(self.nets, saved, strict=True):
            for t, s in zip(net.model.state_dict().values(), state, strict=True):
                t.copy_(s)
            for m in net.momentum:
                m.zero_()
            for counter in (net.step_index, net.loss_sum, net.correct_sum):
                counter.zero_()
        torch.cuda.synchronize()
        return why

    def _capture(self) -> None:
        self.tables.fill(0)
        for net in self.nets:
            net.stream = torch.cuda.Stream()
            net.stream.wait_stream(torch.cuda.current_stream())
            with self.stream_of(net):
                for _ in range(3):
                    self._step(net)
            torch.cuda.current_stream().wait_stream(net.stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=net.stream):
                self._step(net)
            net.graph = graph

    def begin_epoch(self, epoch: int) -> None:
        if self.cuda:  # the tables are rewritten only after every stream has finished the last epoch
            for net in self.nets:
                if net.stream is not None:
                    torch.cuda.current_stream().wait_stream(net.stream)
        self.tables.fill(epoch)
        for net in self.nets:
            net.step_index.zero_()
        self.rejoin()

    def rejoin(self) -> None:
        """Order each net's stream after what the default stream did (zeroed sums, evaluation)."""
        for net in self.nets:
            if net.stream is not None:
                net.stream.wait_stream(torch.cuda.current_stream())

    def stream_of(self, net: Net) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(net.stream) if net.stream is not None else contextlib.nullcontext()

    def step_all(self) -> None:
        for net in self.nets:
            with self.stream_of(net):
                if net.graph is None:
                    self._step(net)
                else:
                    net.graph.replay()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def load_data(spec: str, device: torch.device, data_dir: str | None) -> tuple[dict[str, Any], Any]:
    splits = load_dataset(spec, data_dir)
    normalizer = Normalizer.fit(splits.train.images, "per-pixel")
    on_device = Normalizer(normalizer.mean.to(device), None, "per-pixel")
    data = {
        "images": splits.train.images.to(device),
        "labels": splits.train.labels.to(device),
        "normalizer": on_device,
        "fit": normalizer,
        "classes": list(splits.classes),
    }
    return data, splits


def probe(names: list[str], data: dict[str, Any], args: argparse.Namespace, amp: bool) -> dict[str, Any]:
    """Seconds per fleet step (all nets one step each) and per net alone, after capture."""
    fleet = Fleet(names, data, args, amp)
    started = time.perf_counter()
    eager = fleet.capture()
    capture_s = time.perf_counter() - started
    fleet.begin_epoch(0)
    steps = args.probe_steps

    def timed(nets: list[Net]) -> float:
        keep, fleet.nets = fleet.nets, nets
        fleet.step_all()
        fleet.sync()
        start = time.perf_counter()
        for _ in range(steps):
            fleet.step_all()
        fleet.sync()
        fleet.nets = keep
        return (time.perf_counter() - start) / steps

    fleet_s = timed(fleet.nets)
    alone = {net.name: timed([net]) for net in fleet.nets}
    batch = fleet.recipe.batch_size
    return {
        "precision": "bf16" if amp else "fp32",
        "eager": eager,
        "capture_s": capture_s,
        "fleet_step_s": fleet_s,
        "alone_step_s": alone,
        "alone_images_per_s": {k: batch / v for k, v in alone.items()},
        "fleet_images_per_s": batch * len(names) / fleet_s,
    }


def choose(probes: list[dict[str, Any]], budget_s: float, args: argparse.Namespace) -> tuple[bool, int]:
    """(bf16?, iterations): fp32 when the full schedule fits, else the precision that fits more."""
    fits = {p["precision"]: int(budget_s / p["fleet_step_s"]) for p in probes}
    if args.iterations:
        return args.precision == "bf16", args.iterations
    if "fp32" in fits and fits["fp32"] >= PAPER_ITERATIONS:
        return False, PAPER_ITERATIONS
    best = max(fits, key=fits.get)
    return best == "bf16", min(PAPER_ITERATIONS, fits[best])


def evaluate_net(net: Net, test_batches: TensorBatches, amp: bool) -> dict[str, Any]:
    started = time.perf_counter()
    result = evaluate(
        net.model, test_batches, test_batches.device, 10, amp="bf16" if amp else None, channels_last=True
    )
    result["eval_s"] = time.perf_counter() - started
    return result


def train_fleet(
    names: list[str],
    data: dict[str, Any],
    splits: Any,
    args: argparse.Namespace,
    amp: bool,
    iterations: int,
) -> dict[str, Any]:
    fleet = Fleet(names, data, args, amp)
    eager = fleet.capture()
    recipe = fleet.recipe.scaled(iterations)
    for net in fleet.nets:
        net.schedule = LRSchedule(recipe)
    test = TensorBatches(splits.test, 1000, data["normalizer"], train=False, device=fleet.device)
    steps_per_epoch = fleet.tables.steps
    eval_every = max(1, iterations // EVALUATIONS)
    log_every = max(1, iterations // LOG_ROWS)
    started = time.perf_counter()
    log_clock = (started, 0)
    lrs = {net.name: None for net in fleet.nets}
    for it in range(iterations):
        if it % steps_per_epoch == 0:
            fleet.begin_epoch(it // steps_per_epoch)
        for net in fleet.nets:
            lr = net.schedule.lr(it)
            if lr != lrs[net.name]:  # enqueued on the net's stream, so it lands between two steps
                with fleet.stream_of(net):
                    net.lr.fill_(lr)
                lrs[net.name] = lr
        fleet.step_all()
        done = it + 1
        if done % log_every == 0 or done == iterations:
            fleet.sync()
            now = time.perf_counter()
            images = (done - log_clock[1]) * recipe.batch_size
            for net in fleet.nets:
                seen = (done - log_clock[1]) * recipe.batch_size
                loss, correct = net.loss_sum.item(), net.correct_sum.item()
                net.loss_sum.zero_()
                net.correct_sum.zero_()
                net.rows.append(
                    {
                        "kind": "train",
                        "iteration": done,
                        "epoch": done / steps_per_epoch,
                        "lr": lrs[net.name],
                        "train_loss": loss / (seen // recipe.batch_size),
                        "train_error": 1 - correct / seen,
                        "images_per_s": images / (now - log_clock[0]),
                        "time_s": now - started,
                    }
                )
            log_clock = (now, done)
            fleet.rejoin()
        if done % eval_every == 0 or done == iterations:
            fleet.sync()
            for net in fleet.nets:
                r = evaluate_net(net, test, amp)
                net.rows.append(
                    {
                        "kind": "eval",
                        "iteration": done,
                        "epoch": done / steps_per_epoch,
                        "split": "test",
                        **{k: r[k] for k in ("top1_error", "top5_error", "loss", "images", "eval_s")},
                        "time_s": time.perf_counter() - started,
                    }
                )
            fleet.rejoin()
            elapsed = time.perf_counter() - started
            # Written at every evaluation, so a run stopped early still leaves its latest state.
            write_runs(fleet, args, recipe, done, iterations, amp, elapsed, data)
            pack(args)
            if not args.quiet:
                errs = ", ".join(f"{n.name} {100 * n.rows[-1]['top1_error']:.2f}%" for n in fleet.nets)
                print(f"it {done}/{iterations} {elapsed:.0f}s test error: {errs}", flush=True)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "iterations": iterations, "epochs": iterations / steps_per_epoch, "eager": eager}


def pack(args: argparse.Namespace) -> None:
    """Replace ``--tar`` atomically with the current contents of ``--out``."""
    if not args.tar:
        return
    tmp = args.tar.with_name(args.tar.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        tar.add(args.out, arcname=args.out.name)
    os.replace(tmp, args.tar)


def write_runs(fleet: Fleet, args, recipe, done: int, iterations: int, amp: bool, wall: float, data) -> None:
    """Each net's run directory as of iteration ``done`` of ``iterations``."""
    out: Path = args.out
    device_name = torch.cuda.get_device_name() if fleet.cuda else "cpu"
    for net in fleet.nets:
        run = out / net.name
        run.mkdir(parents=True, exist_ok=True)
        with open(run / "metrics.jsonl", "w") as f:
            for row in net.rows:
                f.write(json.dumps(row) + "\n")
        config = {
            "model": net.name,
            "dataset": args.data,
            "recipe": recipe.to_dict(),
            "seed": args.seed,
            "iterations": iterations,
            "val_split": 0,
            "normalization": "per-pixel",
            "channels_last": True,
            "amp": "bf16" if amp else None,
        }
        state = {k: v.detach().cpu() for k, v in net.model.state_dict().items()}
        save_checkpoint(
            {
                "model": state,
                "model_name": net.name,
                "model_config": net.model.config,
                "classes": data["classes"],
                "normalizer": data["fit"].state_dict(),
                "image_size": list(data["images"].shape[2:]),
                "config": config,
                "iteration": done,
            },
            run / "checkpoint.pt",
        )
        summary = {
            "model": net.name,
            "params": count_params(net.model),
            "dataset": args.data,
            "recipe": recipe.name,
            "seed": args.seed,
            "iterations": iterations,
            "iterations_done": done,
            "complete": done == iterations,
            "batch_size": recipe.batch_size,
            "wall_time_s": wall,
            "trained_with": f"benchmarks/paper_schedule_gpu.py, {len(fleet.nets)} nets side by side",
            "device": device_name,
            "precision": "bf16 autocast" if amp else "fp32 (TF32 convolutions)",
            "torch": torch.__version__,
            "final": final_errors(net.rows),
        }
        write_summary(run, summary)


def final_errors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``final`` block of a trainer's summary.json, from the last train and eval rows."""
    train = [r for r in rows if r["kind"] == "train"][-1]
    test = [r for r in rows if r["kind"] == "eval"][-1]
    return {
        "train_loss": train["train_loss"],
        "train_error": train["train_error"],
        "split": "test",
        **{k: test[k] for k in ("top1_error", "top5_error", "loss")},
        "test_top1_error": test["top1_error"],
        "test_top5_error": test["top5_error"],
    }


def degradation_record(out: Path, names: list[str], report: dict[str, Any]) -> Path | None:
    """Write ``out/degradation.json`` over the fleet's plain/residual CIFAR runs, so that
    ``resnetlab report OUT`` draws Fig. 6 with the paper's verdicts from the metrics files."""
    nets = {}
    for name in names:
        info = model_info(name)
        if info.family == "cifar" and name.startswith(("plain", "resnet")):
            nets[PaperNet(info.depth, name.startswith("resnet"))] = out / name
    if not nets:
        return None
    train = report["train"]
    summaries = [json.loads((out / n / "summary.json").read_text()) for n in names]
    record = {
        "experiment": "degradation",
        **environment(summaries[0]["device"], 1),
        "torch_threads": torch.get_num_threads(),
        "dataset": summaries[0]["dataset"],
        "seeds": 1,
        "batch_size": summaries[0]["batch_size"],
        "budget": {"iterations": train["iterations"], "minutes": None, "requested_iterations": None},
        "runs": run_entries(out, {(net, 0): path for net, path in nets.items()}),
        "runs_wall_time_s": train["wall_s"],
        "wall_time_s": report.get("total_s", train["wall_s"]),
        "depths": sorted({net.depth for net in nets}),
        "trained_with": summaries[0]["trained_with"],
    }
    return write_record(out, record)


def resnet50_throughput(device: torch.device, steps: int) -> dict[str, Any]:
    """Training images/s of ResNet-50 at 224x224, batch 256, bf16 autocast, channels_last (eager)."""
    model = build_model("resnet50").to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(256, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (256,), device=device)

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {"batch": 256, "step_s": seconds, "images_per_s": 256 / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset spec, e.g. folder:PATH")
    p.add_argument("--data-dir", help="where decoded caches go")
    p.add_argument("--nets", default="plain20,plain56,resnet20,resnet56")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpu-minutes", type=float, default=8.0, help="training budget after the probe")
    p.add_argument("--iterations", type=int, help="skip the fit: train this many (with --precision)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--probe-steps", type=int, default=PROBE_STEPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--resnet50-steps", type=int, default=20, help="0 skips the ResNet-50 throughput")
    p.add_argument("--tar", type=Path, help="also pack --out into this .tar file")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    t0 = time.perf_counter()
    names = args.nets.split(",")
    data, splits = load_data(args.data, device, args.data_dir)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    report["torch"] = torch.__version__
    report["data_load_s"] = time.perf_counter() - t0
    precisions = [False, True] if device.type == "cuda" and not args.iterations else []
    report["probes"] = [probe(names, data, args, amp) for amp in precisions]
    for pr in report["probes"]:
        print(json.dumps(pr), flush=True)
    amp, iterations = choose(report["probes"], args.gpu_minutes * 60, args)
    report["chosen"] = {"precision": "bf16" if amp else "fp32", "iterations": iterations}
    print(f"training {names} for {iterations} iterations, {report['chosen']['precision']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "fleet.json", json.dumps(report, indent=1) + "\n")
    report["train"] = train_fleet(names, data, splits, args, amp, iterations)
    report["finals"] = {n: json.loads((args.out / n / "summary.json").read_text())["final"] for n in names}
    if device.type == "cuda" and args.resnet50_steps:
        report["resnet50"] = resnet50_throughput(device, args.resnet50_steps)
    report["total_s"] = time.perf_counter() - t0
    degradation_record(args.out, names, report)
    atomic_write(args.out / "fleet.json", json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("chosen", "train", "finals", "total_s")}), flush=True)
    pack(args)


if __name__ == "__main__":
    main()
