"""One net of a training job: its run directory and everything in it, its network, optimizer,
schedule and meters. The job (``engine.trainer``) owns the data, the loop and the clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint
from resnetlab.engine.config import TrainConfig, resolve_compile, resolve_mode, resumed_config
from resnetlab.engine.distributed import DistContext, convert_sync_bn
from resnetlab.engine.evaluate import FlipViews, evaluate
from resnetlab.engine.fleet import Step, build_step
from resnetlab.engine.graph_step import EpochTables
from resnetlab.engine.metrics import Console, FiniteGuard, Meter, MetricsLog, TensorBoard
from resnetlab.engine.run_data import RunData
from resnetlab.engine.runlock import RunLock
from resnetlab.engine.schedules import LRSchedule
from resnetlab.engine.state import check_weights
from resnetlab.engine.static_sgd import StaticSGD
from resnetlab.errors import UserError
from resnetlab.models import ResNet, build_model, count_params


class DivergedError(UserError):
    """The loss or the weights stopped being finite; the message names the iteration."""


class NetRun:
    """One net of a job, from its (possibly resumed) config to its summary."""

    def __init__(self, config: TrainConfig, ctx: DistContext) -> None:
        self.ctx = ctx
        self.ckpt = load_checkpoint(config.resume) if config.resume is not None else None
        self.config = resolve_compile(
            resolve_mode(resumed_config(config, self.ckpt) if self.ckpt else config, ctx.device),
            ctx.device,
            ctx.world_size,
            resumed=self.ckpt is not None,
        )
        recorded = self.config.procs
        if self.ckpt and recorded is not None and recorded != ctx.world_size:
            # Each rank's BN sees batch / procs images: another count would change what the run computes.
            raise UserError(
                f"--resume {config.resume}: the run trains in {recorded} process(es), not {ctx.world_size} "
                f"(resume it with --procs {recorded} or --procs auto)"
            )
        self.config = replace(self.config, procs=ctx.world_size)
        self.lock = RunLock(self.config.out)
        self.last_checkpoint: int | None = None
        self.last_lr = 0.0  # the rate of the latest step, as logged
        self.console = Console(0, 0, False)

    @property
    def name(self) -> str:
        return str(self.config.model)

    def build(self, data: RunData, tables: EpochTables | None) -> Step:
        """The network, its optimizer and its step (graph mode when ``tables`` are given)."""
        c, ctx, recipe = self.config, self.ctx, self.config.recipe
        overrides = {
            **c.model_overrides,
            "num_classes": len(data.classes),
            "zero_init_residual": recipe.zero_init_residual,
        }
        self.model: ResNet = build_model(c.model, **overrides)
        if self.ckpt and self.ckpt["model_config"] != self.model.config:
            raise UserError(
                f"--resume {c.resume}: the checkpoint's network differs from {c.model} {overrides}"
            )
        self.model.checkpoint_activations = c.checkpoint_activations
        self.model.to(ctx.device)
        if c.channels_last:  # before DDP, whose gradient buckets take the parameters' layout
            self.model.to(memory_format=torch.channels_last)
        net: torch.nn.Module = self.model
        if c.sync_bn and ctx.distributed:
            net = convert_sync_bn(net, ctx.device)
        if ctx.distributed:
            net = DistributedDataParallel(
                net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        sgd = {"lr": recipe.lr, "momentum": recipe.momentum, "weight_decay": recipe.weight_decay}
        self.optimizer = (
            StaticSGD(net.parameters(), nesterov=recipe.nesterov, **sgd)
            if tables is not None
            else torch.optim.SGD(net.parameters(), nesterov=recipe.nesterov, **sgd)
        )
        self.step = build_step(
            net,
            self.optimizer,
            tables,
            amp=c.amp,
            channels_last=c.channels_last,
            label_smoothing=recipe.label_smoothing,
            compile=c.compile,
        )
        return self.step

    def start(self, iteration: int, console: Console) -> list[dict[str, Any]]:
        """Open the meters and files at ``iteration`` (restoring a resumed net); returns the rows
        logged before a resume."""
        main, config = self.ctx.is_main, self.config
        self.schedule = LRSchedule(config.schedule_recipe())
        self.meter, self.warm_meter = Meter(self.ctx.device), Meter(self.ctx.device)
        self.console = console
        rows: list[dict[str, Any]] = []
        if self.ckpt:
            rows = restore_net(self, self.ckpt)
            self.last_checkpoint = iteration
            self.ckpt = None
        self.metrics = MetricsLog(config.out if main else None, rows)
        self.tensorboard = TensorBoard(config.out if main else None)
        self.guard = FiniteGuard(self.ctx.device, iteration)
        return rows

    def close(self) -> None:
        self.console.close()
        if hasattr(self, "tensorboard"):
            self.tensorboard.close()

    def set_lr(self, iteration: int) -> None:
        self.last_lr = self.schedule.lr(iteration)
        self.step.set_lr(self.last_lr)

    def add(self, loss: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        """Account one step (device tensors; no sync)."""
        self.meter.add(loss, correct, images)
        if self.schedule.warming:
            self.warm_meter.add(loss, correct, images)
        self.guard.update(loss)

    def record(self, row: dict[str, Any]) -> None:
        self.metrics.append(row)
        self.tensorboard.add(row)

    def evaluate(self, batches: Any, limit: int | None, *, final: bool = False) -> dict[str, Any]:
        """Intermediate evaluations run in the training precision; the final one always in float32,
        so that summary.json holds what `resnetlab eval` prints on any machine."""
        c = self.config
        return evaluate(
            self.model,
            FlipViews(batches) if c.recipe.test_flip else batches,
            self.ctx.device,
            self.model.config["num_classes"],
            limit=limit,
            ctx=self.ctx,
            amp=None if final else c.amp,
            channels_last=c.channels_last,
        )

    def diverged(self, what: str) -> DivergedError:
        path = self.config.out / CHECKPOINT_NAME
        kept = (
            f"the last good checkpoint {path} (iteration {self.last_checkpoint}) is intact"
            if self.last_checkpoint is not None
            else "no checkpoint had been written"
        )
        return DivergedError(f"training diverged: {what} (lr {self.last_lr:g}); {kept}")

    def check_finite(self) -> None:
        bad = self.guard.first_bad_iteration(self.ctx)
        if bad is not None:
            raise self.diverged(f"the training loss became non-finite at iteration {bad}")

    def checkpoint(self, state: dict[str, Any], iteration: int) -> None:
        """Write ``state`` (see :func:`checkpoint_state`) once the weights are known to be finite."""
        self.check_finite()
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if not torch.stack([t.isfinite().all() for t in tensors]).all().item():
            raise self.diverged(f"the weights became non-finite by iteration {iteration}")
        if self.ctx.is_main:
            save_checkpoint(state, self.config.out / CHECKPOINT_NAME)
        self.last_checkpoint = iteration

    def final_block(self, eval_split: str, finals: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The ``final`` block of summary.json."""
        last = self.metrics.last("train") or {}
        main = finals[eval_split]
        final = {
            "train_loss": last.get("train_loss"),
            "train_error": last.get("train_error"),
            "split": eval_split,
            **{k: main[k] for k in ("top1_error", "top5_error", "loss")},
        }
        for split, result in finals.items():
            final |= {
                f"{split}_top1_error": result["top1_error"],
                f"{split}_top5_error": result["top5_error"],
            }
        return final

    def params(self) -> int:
        return count_params(self.model)


def checkpoint_state(run: NetRun, data: RunData, position: dict[str, Any]) -> dict[str, Any]:
    """The plain-typed state of one net of a job at ``position`` (iteration, epoch, step_in_epoch,
    elapsed_s)."""
    return {
        "model": run.model.state_dict(),
        "model_name": run.config.model,
        "model_config": run.model.config,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        **{k: position[k] for k in ("iteration", "epoch", "step_in_epoch")},
        "rng": rng_state(),
        "config": run.config.to_dict(),
        "classes": list(data.classes),
        "normalizer": data.normalizer.state_dict(),
        "image_size": list(data.image_size),
        "metrics": list(run.metrics.rows),
        "meters": {"log": run.meter.state_dict(), "warmup": run.warm_meter.state_dict()},
        "elapsed_s": position["elapsed_s"],
    }


def restore_net(run: NetRun, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """Put one net back where ``ckpt`` was taken; returns the metrics rows logged until then."""
    check_weights(run.model, ckpt["model"])
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    run.meter.load_state_dict(ckpt["meters"]["log"])
    run.warm_meter.load_state_dict(ckpt["meters"]["warmup"])
    return list(ckpt["metrics"])
