"""The training loop: ``train(config)`` runs a recipe end to end and writes the run directory.

Read it top to bottom: set up (resume, data, model, optimizer), fix the iteration count (a time
budget is measured once), then iterate with logging, evaluation and checkpoints at their intervals,
and end with the evaluation of the whole split and summary.json. Only rank 0 writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from resnetlab.analysis.counts import count_params
from resnetlab.engine import budget
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from resnetlab.engine.config import TrainConfig, resolve_intervals, resolve_mode, resumed_config
from resnetlab.engine.distributed import (
    DistContext,
    convert_sync_bn,
    device_name,
    set_determinism,
    setup_distributed,
)
from resnetlab.engine.evaluate import FlipViews, evaluate
from resnetlab.engine.interrupt import Interrupted, InterruptFlag
from resnetlab.engine.metrics import Console, FiniteGuard, Meter, MetricsLog, TensorBoard
from resnetlab.engine.run_data import RunData, build_data, load_run_data
from resnetlab.engine.rundir import environment, prepare_run_dir, write_config, write_summary
from resnetlab.engine.runlock import RunLock
from resnetlab.engine.schedules import LRSchedule
from resnetlab.engine.state import checkpoint_state, model_from_checkpoint, restore_state
from resnetlab.engine.step import TrainStep
from resnetlab.engine.testhook import stop_if_asked
from resnetlab.errors import UserError
from resnetlab.models import ResNet, build_model

__all__ = ["DivergedError", "TrainResult", "build_data", "evaluate", "train"]


class DivergedError(UserError):
    """The loss or the weights stopped being finite; the message names the iteration."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, its summary and the trained network."""

    out: Path
    summary: dict[str, Any]
    model: ResNet


def train(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says (under torchrun: as one rank of the job) and write ``config.out``."""
    started = time.perf_counter()
    config.validate()
    ctx = setup_distributed(config.device)
    try:
        return _Trainer(config, ctx, started).run()
    finally:
        ctx.close()


class _Trainer:
    """One run of :func:`train`; its attributes are the state a checkpoint captures."""

    def __init__(self, config: TrainConfig, ctx: DistContext, started: float) -> None:
        self.ctx, self.started = ctx, started
        self.ckpt = load_checkpoint(config.resume) if config.resume is not None else None
        self.config = resolve_mode(resumed_config(config, self.ckpt) if self.ckpt else config, ctx.device)
        self.iteration = self.epoch = self.step_in_epoch = 0
        self.elapsed_before = 0.0
        self.last_checkpoint: int | None = None
        self.last_lr = 0.0  # the rate of the latest step, as logged
        self.measured_step_s: float | None = None  # seconds per step, when a time budget was measured

    def run(self) -> TrainResult:
        if self.ctx.is_main and not self.config.quiet:
            c = self.config
            print(f"precision {c.precision}, {c.memory_format} ({c.mode_reason})", flush=True)
        # One run per directory: rank 0 locks it before looking at (or deleting) anything in it.
        lock = RunLock(self.config.out)
        try:
            finished = self.ctx.agree(lambda: prepare_run_dir(self.config, lock))
            return self._reuse(finished) if finished is not None else self._train()
        finally:
            lock.release()

    def _train(self) -> TrainResult:
        self._build()
        self._resolve_iterations()
        self._start()
        try:
            with InterruptFlag() as self.interrupt:
                self._loop()
            return self._finish()
        finally:
            self.console.close()
            self.tensorboard.close()

    def _reuse(self, summary: dict[str, Any]) -> TrainResult:
        if self.ctx.is_main and not self.config.quiet:
            print(f"{self.config.out} already holds this finished run; reusing it (--overwrite retrains)")
        model = model_from_checkpoint(load_checkpoint(self.config.out / CHECKPOINT_NAME))
        return TrainResult(self.config.out, summary, model)

    def _build(self) -> None:
        c, ctx = self.config, self.ctx
        set_determinism(c.seed, c.deterministic)
        self.data: RunData = load_run_data(c, ctx)
        recipe = c.recipe
        overrides = {
            **c.model_overrides,
            "num_classes": len(self.data.classes),
            "zero_init_residual": recipe.zero_init_residual,
        }
        self.model = build_model(c.model, **overrides)
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
        self.optimizer = torch.optim.SGD(
            net.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
        self.step = TrainStep(
            net,
            self.optimizer,
            amp=c.amp,
            channels_last=c.channels_last,
            label_smoothing=recipe.label_smoothing,
            compile=c.compile,
        )

    def _evaluate(self, batches: Any, limit: int | None, *, final: bool = False) -> dict[str, Any]:
        """Intermediate evaluations run in the training precision; the final one always in float32,
        so that summary.json holds what `resnetlab eval` prints on any machine."""
        c = self.config
        return evaluate(
            self.model,
            FlipViews(batches) if c.recipe.test_flip else batches,
            self.ctx.device,
            len(self.data.classes),
            limit=limit,
            ctx=self.ctx,
            amp=None if final else c.amp,
            channels_last=c.channels_last,
        )

    def _resolve_iterations(self) -> None:
        c = self.config
        total = c.total_iterations()
        if total is None:  # a time budget, not yet measured (a resumed run has its count)
            budget_s = c.budget_minutes * 60
            speed = budget.measure_speed(
                self.step,
                self.data.train,
                lambda: self._evaluate(self.data.eval, 2 * self.data.eval.batch_size)["images"],
                budget_s,
                self.ctx,
            )
            total = budget.plan_iterations(
                budget_s,
                time.perf_counter() - self.started,
                speed,
                self._resolved,
                eval_images=self.data.eval_images,
                final_eval_images=self.data.eval_images + self.data.test_images,
            )
            self.measured_step_s = speed.step_s
            if self.ctx.is_main and not c.quiet:
                scaled = c.recipe.scaled(total)
                shape = (
                    f"lr milestones {list(scaled.milestones)}"
                    if scaled.schedule == "step"
                    else scaled.schedule
                )
                print(
                    f"budget {c.budget_minutes:g} min: {speed.step_s:.3g} s/iteration measured -> "
                    f"{total} iterations, {shape}",
                    flush=True,
                )
        self.config = self._resolved(total)

    def _resolved(self, total: int) -> TrainConfig:
        """The config of a ``total``-iteration run on this data, every interval chosen."""
        return resolve_intervals(
            self.config,
            total,
            batches_per_epoch=self.data.train.batches_per_epoch,
            eval_images=self.data.eval_images,
        )

    def _start(self) -> None:
        c, main = self.config, self.ctx.is_main
        self.schedule = LRSchedule(c.schedule_recipe())
        self.meter, self.warm_meter = Meter(self.ctx.device), Meter(self.ctx.device)
        rows: list[dict[str, Any]] = []
        if self.ckpt:
            rows = restore_state(self, self.ckpt)
            self.last_checkpoint = self.iteration
            self.ckpt = None
        if main:
            write_config(c)
        self.metrics = MetricsLog(c.out if main else None, rows)
        self.console = Console(c.iterations, self.iteration, main and not c.quiet)
        self.tensorboard = TensorBoard(c.out if main else None)
        self.guard = FiniteGuard(self.ctx.device, self.iteration)
        self.log_clock = (time.perf_counter(), self.iteration)
        self.checkpoint_clock = time.perf_counter()

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, across resumes."""
        return self.elapsed_before + time.perf_counter() - self.started

    def _loop(self) -> None:
        total, train_batches = self.config.iterations, self.data.train
        while self.iteration < total:
            for x, y in train_batches.epoch(self.epoch, start=self.step_in_epoch):
                self.last_lr = self.schedule.lr(self.iteration)
                self.step.set_lr(self.last_lr)
                loss, correct = self.step.step(x, y)
                self.meter.add(loss, correct, y.shape[0])
                if self.schedule.warming:
                    self.warm_meter.add(loss, correct, y.shape[0])
                self.guard.update(loss)
                self.iteration += 1
                self.step_in_epoch += 1
                self.console.step()
                self._after_step()
                if self._stop_requested():
                    self._stop_interrupted()
                if self.iteration >= total:
                    break
            if self.step_in_epoch >= train_batches.batches_per_epoch:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def _stop_requested(self) -> bool:
        """Whether Ctrl-C asked to stop. Ranks of a job agree on it, so all stop at the same iteration
        and its checkpoint is whole: on CPUs after every iteration (one tiny gloo all-reduce, well under
        1% of a step), on GPUs at log rows, where the host waits for the device anyway."""
        if not self.ctx.distributed:
            return self.interrupt.requested
        if self.ctx.device.type != "cpu" and self.iteration % self.config.log_every:
            return False
        flag = torch.tensor([int(self.interrupt.requested)], device=self.ctx.device)
        return bool(self.ctx.all_reduce(flag, "max").item())

    def _after_step(self) -> None:
        c, it = self.config, self.iteration
        if self.schedule.wants_train_error(it):
            _, error = self.warm_meter.read(self.ctx)
            if self.schedule.observe_train_error(error, it):
                self.console.print(
                    f"warm-up over at iteration {it}: training error {100 * error:.1f}% < "
                    f"{100 * c.recipe.warmup_error:.0f}%, lr {self.schedule.lr(it):g} from now on"
                )
        if it % c.log_every == 0 or it == c.iterations:
            self._log_train()
        if it % c.eval_every == 0 and it < c.iterations:
            result = self._eval_row(self.data.eval_split, self.data.eval, c.eval_limit)
            if self.schedule.observe_eval(result["top1_error"]):
                self.console.print(
                    f"validation error plateaued: lr {self.schedule.lr(it):g} from iteration {it}"
                )
        by_count = c.checkpoint_every is not None and it % c.checkpoint_every == 0
        # The clock is read at log intervals only, and rank 0's reading decides, so all ranks agree.
        read_clock = c.checkpoint_minutes is not None and it % c.log_every == 0
        if by_count or (read_clock and self.ctx.agree(self._clock_due)) or it == c.iterations:
            self._checkpoint()
        stop_if_asked(it)

    def _clock_due(self) -> bool:
        """Whether ``checkpoint_minutes`` have passed since the last checkpoint (or the start)."""
        return time.perf_counter() - self.checkpoint_clock >= 60 * self.config.checkpoint_minutes

    def _epoch_float(self) -> float:
        return self.iteration / self.data.train.batches_per_epoch

    def _record(self, row: dict[str, Any]) -> None:
        self.metrics.append(row)
        self.tensorboard.add(row)

    def _log_train(self) -> None:
        self._check_finite()
        loss, error = self.meter.read(self.ctx)
        now = time.perf_counter()
        seconds, since = now - self.log_clock[0], self.log_clock[1]
        self.log_clock = (now, self.iteration)
        images = (self.iteration - since) * self.config.recipe.batch_size
        row = {
            "kind": "train",
            "iteration": self.iteration,
            "epoch": self._epoch_float(),
            "lr": self.last_lr,
            "train_loss": loss,
            "train_error": error,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "time_s": self.elapsed(),
        }
        self._record(row)
        self.console.train_row(row, self.config.iterations)

    def _eval_row(
        self, split: str, batches: Any, limit: int | None, *, final: bool = False
    ) -> dict[str, Any]:
        self._check_finite()
        started = time.perf_counter()
        result = self._evaluate(batches, limit, final=final)
        row = {"kind": "eval", "iteration": self.iteration, "epoch": self._epoch_float(), "split": split}
        row |= {k: result[k] for k in ("top1_error", "top5_error", "loss", "images")}
        # eval_s lets a reader tell training time from evaluation time (time to accuracy).
        row |= {"eval_s": time.perf_counter() - started, "time_s": self.elapsed()}
        self._record(row)
        self.console.eval_row(row)
        return result

    def _diverged(self, what: str) -> DivergedError:
        path = self.config.out / CHECKPOINT_NAME
        kept = (
            f"the last good checkpoint {path} (iteration {self.last_checkpoint}) is intact"
            if self.last_checkpoint is not None
            else "no checkpoint had been written"
        )
        return DivergedError(f"training diverged: {what} (lr {self.last_lr:g}); {kept}")

    def _check_finite(self) -> None:
        bad = self.guard.first_bad_iteration(self.ctx)
        if bad is not None:
            raise self._diverged(f"the training loss became non-finite at iteration {bad}")

    def _checkpoint(self) -> None:
        self._check_finite()
        state = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        finite = torch.stack([t.isfinite().all() for t in state]).all()
        if not finite.item():
            raise self._diverged(f"the weights became non-finite by iteration {self.iteration}")
        if self.ctx.is_main:
            save_checkpoint(checkpoint_state(self), self.config.out / CHECKPOINT_NAME)
        self.last_checkpoint = self.iteration
        self.checkpoint_clock = time.perf_counter()

    def _stop_interrupted(self) -> None:
        if self.last_checkpoint != self.iteration:
            self._checkpoint()
        out = self.config.out
        raise Interrupted(
            f"at iteration {self.iteration} of {self.config.iterations}; its checkpoint is in {out}: "
            f"continue with `resnetlab train --resume {out}`"
        )

    def _finish(self) -> TrainResult:
        c, data = self.config, self.data
        finals = {data.eval_split: self._eval_row(data.eval_split, data.eval, None, final=True)}
        if data.test is not None:
            finals["test"] = self._eval_row("test", data.test, None, final=True)
        summary = self._summary(finals)
        if self.ctx.is_main:
            write_summary(c.out, summary)
            self.console.print(
                f"done: {c.iterations} iterations in {summary['wall_time_s']:.0f} s; "
                + ", ".join(f"{s} top-1 error {100 * r['top1_error']:.2f}%" for s, r in finals.items())
            )
        return TrainResult(c.out, summary, self.model)

    def _summary(self, finals: dict[str, dict[str, Any]]) -> dict[str, Any]:
        c = self.config
        last = self.metrics.last("train") or {}
        main = finals[self.data.eval_split]
        final = {
            "train_loss": last.get("train_loss"),
            "train_error": last.get("train_error"),
            "split": self.data.eval_split,
            **{k: main[k] for k in ("top1_error", "top5_error", "loss")},
        }
        for split, result in finals.items():
            final |= {
                f"{split}_top1_error": result["top1_error"],
                f"{split}_top5_error": result["top5_error"],
            }
        return {
            "model": c.model,
            "params": count_params(self.model),
            "dataset": c.dataset,
            "recipe": c.recipe.name,
            "seed": c.seed,
            "iterations": c.iterations,
            "epochs": self._epoch_float(),
            "batch_size": c.recipe.batch_size,
            "budget_minutes": c.budget_minutes,
            "precision": c.precision,
            "memory_format": c.memory_format,
            "mode_reason": c.mode_reason,
            "measured_step_s": self.measured_step_s,
            "wall_time_s": self.elapsed(),
            "warmup_ended_at": self.schedule.warmup_ended_at,
            "lr_reductions": self.schedule.reductions,
            "final": final,
            **environment(device_name(self.ctx.device), self.ctx.world_size),
        }
