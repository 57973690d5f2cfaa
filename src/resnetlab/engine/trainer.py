"""The training loop: ``train(config)`` runs a recipe end to end and writes the run directory;
``train_fleet(configs)`` does the same for several nets side by side on the same batches.

Read it top to bottom: set up (resume, data, nets, their step), fix the iteration count (a time
budget is measured once), then iterate with logging, evaluation and checkpoints at their intervals,
and end with the evaluation of the whole split and summary.json. A single run is a fleet of one:
each net has its own run directory, written exactly as a run of its own would write it. Only rank 0
writes files.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from resnetlab.engine import budget
from resnetlab.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, set_rng_state
from resnetlab.engine.config import TrainConfig, resolve_intervals
from resnetlab.engine.distributed import DistContext, device_name, set_determinism, setup_distributed
from resnetlab.engine.evaluate import evaluate
from resnetlab.engine.fleet import Fleet, StepChoice, choose_step
from resnetlab.engine.graph_step import EpochTables
from resnetlab.engine.interrupt import Interrupted, InterruptFlag
from resnetlab.engine.metrics import Console
from resnetlab.engine.net_run import DivergedError, NetRun, checkpoint_state
from resnetlab.engine.run_data import RunData, build_data, load_run_data
from resnetlab.engine.rundir import environment, prepare_run_dir, write_config, write_summary
from resnetlab.engine.schedules import LRSchedule
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.engine.testhook import stop_if_asked
from resnetlab.errors import UserError
from resnetlab.models import ResNet

__all__ = ["DivergedError", "TrainResult", "build_data", "evaluate", "probe_fleet", "train", "train_fleet"]

# What the nets of one fleet may choose for themselves (a recipe of the same batch size: a warm-up,
# another learning rate); everything else (data, seed, length, intervals, precision) they share,
# since they share the batches and the loop.
PER_NET_FIELDS = ("model", "model_overrides", "recipe", "out", "resume", "mode_reason", "compile_reason")


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, its summary and the trained network."""

    out: Path
    summary: dict[str, Any]
    model: ResNet


def train(config: TrainConfig) -> TrainResult:
    """Train as ``config`` says (under torchrun: as one rank of the job) and write ``config.out``."""
    return train_fleet([config])[0]


def train_fleet(configs: Sequence[TrainConfig]) -> list[TrainResult]:
    """Train one net per config side by side on the same batches, each into its own run directory,
    exactly as :func:`train` would train each alone (same seed, same batches, same weights).

    The configs may differ only in model, model overrides, output and resume. Finished runs are
    reused; the others must all start fresh or all resume from the same iteration.
    """
    started = time.perf_counter()
    if not configs:
        raise ValueError("train_fleet needs at least one config")
    for config in configs:
        config.validate()
    ctx = setup_distributed(configs[0].device)
    try:
        return _Trainer(configs, ctx, started).run()
    finally:
        ctx.close()


def probe_fleet(configs: Sequence[TrainConfig], steps: int, warmup: int = 3) -> dict[str, Any]:
    """Seconds per step of the whole fleet (every net one step), timed over ``steps`` steps after
    ``warmup`` (and capture, timed apart), as :func:`train_fleet` would run it; no run directory is
    touched and nothing is kept. Returns the step mode and why, the timings and images per second."""
    started = time.perf_counter()
    for config in configs:
        config.validate()
    ctx = setup_distributed(configs[0].device)
    try:
        job = _Trainer(configs, ctx, started)
        job._build()
        capture_s = time.perf_counter() - started
        batches = itertools.chain.from_iterable(job.fleet.epoch(e) for e in itertools.count())
        for i in range(warmup + steps):
            if i == warmup:
                ctx.synchronize()
                clock = time.perf_counter()
            job.fleet.step_all(next(batches))
        ctx.synchronize()
        step_s = (time.perf_counter() - clock) / steps
    finally:
        ctx.close()
    batch = job.fleet.batch_size
    return {
        "precision": job.config.precision,
        "step": job.step_choice.mode,
        "step_reason": job.step_choice.reason,
        "setup_s": capture_s,
        "fleet_step_s": step_s,
        "fleet_images_per_s": batch * len(configs) / step_s,
    }


def _shared(config: TrainConfig) -> dict[str, Any]:
    d = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return {k: v for k, v in d.items() if k not in PER_NET_FIELDS}


def check_fleet(configs: Sequence[TrainConfig]) -> None:
    """Raise a one-line :class:`UserError` unless the configs can train as one fleet."""
    first = _shared(configs[0])
    for config in configs[1:]:
        other = _shared(config)
        diff = [k for k in first if first[k] != other[k]]
        if config.recipe.batch_size != configs[0].recipe.batch_size:
            diff.append("batch size")
        if diff:
            raise UserError(
                f"{config.out} cannot train beside {configs[0].out}: they differ in {', '.join(diff)}"
            )
    outs = [c.out.resolve() for c in configs]
    if len(set(outs)) < len(outs):
        raise UserError("the nets of a fleet need one run directory each")


class _Trainer:
    """One training job; the nets' own state lives in their :class:`NetRun`."""

    def __init__(self, configs: Sequence[TrainConfig], ctx: DistContext, started: float) -> None:
        self.ctx, self.started = ctx, started
        self.runs = [NetRun(config, ctx) for config in configs]
        check_fleet([run.config for run in self.runs])
        self.iteration = self.epoch = self.step_in_epoch = 0
        self.elapsed_before = 0.0
        self.measured_step_s: float | None = None  # seconds per step, when a time budget was measured

    @property
    def config(self) -> TrainConfig:
        """The shared part of the job's configs (the first net's)."""
        return self.runs[0].config

    def run(self) -> list[TrainResult]:
        if self.ctx.is_main and not self.config.quiet:
            c = self.config
            print(f"precision {c.precision}, {c.memory_format} ({c.mode_reason})", flush=True)
        try:
            # One run per directory: rank 0 locks it before looking at (or deleting) anything in it.
            finished = [self.ctx.agree(lambda r=r: prepare_run_dir(r.config, r.lock)) for r in self.runs]
            results: dict[int, TrainResult] = {
                i: self._reuse(run, summary)
                for i, (run, summary) in enumerate(zip(self.runs, finished, strict=True))
                if summary is not None
            }
            todo = [i for i, summary in enumerate(finished) if summary is None]
            if todo:
                everyone, self.runs = self.runs, [self.runs[i] for i in todo]
                results |= dict(zip(todo, self._train(), strict=True))
                self.runs = everyone
            return [results[i] for i in range(len(self.runs))]
        finally:
            for run in self.runs:
                run.lock.release()

    def _reuse(self, run: NetRun, summary: dict[str, Any]) -> TrainResult:
        if self.ctx.is_main and not run.config.quiet:
            print(f"{run.config.out} already holds this finished run; reusing it (--overwrite retrains)")
        model = model_from_checkpoint(load_checkpoint(run.config.out / CHECKPOINT_NAME))
        return TrainResult(run.config.out, summary, model)

    def _train(self) -> list[TrainResult]:
        self._build()
        self._resolve_iterations()
        self._start()
        try:
            with InterruptFlag() as self.interrupt:
                self._loop()
            return self._finish()
        finally:
            for run in self.runs:
                run.close()

    def _build(self) -> None:
        c, ctx = self.config, self.ctx
        set_determinism(c.seed, c.deterministic)
        self.data: RunData = load_run_data(c, ctx)
        self.step_choice: StepChoice = choose_step(
            c.step,
            ctx.device,
            self.data.train,
            world_size=ctx.world_size,
            compile=c.compile,
            recompute=c.checkpoint_activations,
        )
        tables = EpochTables(self.data.train) if self.step_choice.mode == "graph" else None
        steps, before = [], rng_state()
        for run in self.runs:
            set_rng_state(before)  # every net starts from the weights it gets in a run of its own
            steps.append(run.build(self.data, tables))
        self.fleet = Fleet(steps, self.data.train, tables)
        why_eager = self.fleet.capture()
        if why_eager:
            self.step_choice = StepChoice(self.step_choice.mode, f"{self.step_choice.reason}; {why_eager}")
        if ctx.is_main and not c.quiet:
            print(f"step {self.step_choice.mode} ({self.step_choice.reason})", flush=True)
            print(f"compile {'on' if c.compile else 'off'} ({c.compile_reason})", flush=True)

    def _resolve_iterations(self) -> None:
        c = self.config
        total = c.total_iterations()
        if total is None:  # a time budget, not yet measured (a resumed run has its count)
            budget_s = c.budget_minutes * 60
            limit = 2 * self.data.eval.batch_size
            speed = budget.measure_speed(
                self.fleet,
                lambda: sum(r.evaluate(self.data.eval, limit)["images"] for r in self.runs),
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
        resolved = self._resolved(total)
        for run in self.runs:
            run.config = dataclasses.replace(resolved, **{k: getattr(run.config, k) for k in PER_NET_FIELDS})

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
        ckpts = [run.ckpt for run in self.runs]
        if any(ckpts):
            self._restore_position(ckpts)
        labelled = len(self.runs) > 1
        for i, run in enumerate(self.runs):
            console = Console(
                c.iterations if i == 0 else 0,
                self.iteration,
                main and not c.quiet,
                label=f"{run.config.out.name}: " if labelled else "",  # unique, unlike model names
                bar=i == 0,
            )
            run.start(self.iteration, console)
            if main:
                write_config(run.config)
        self.log_clock = (time.perf_counter(), self.iteration)
        self.checkpoint_clock = time.perf_counter()

    def _restore_position(self, ckpts: list[dict[str, Any] | None]) -> None:
        """The job's place (iteration, epoch, RNG, elapsed time) from its nets' checkpoints, which
        must all be there and agree."""
        keys = ("iteration", "epoch", "step_in_epoch")
        places = {tuple(ck[k] for k in keys) if ck else None for ck in ckpts}
        if len(places) > 1:
            raise UserError(
                "the nets of this fleet stopped at different iterations; resume them one at a time"
            )
        first = ckpts[0]
        self.iteration, self.epoch, self.step_in_epoch = (first[k] for k in keys)
        set_rng_state(first["rng"])
        self.elapsed_before = float(first["elapsed_s"])

    def elapsed(self) -> float:
        """Wall-clock seconds of training so far, across resumes."""
        return self.elapsed_before + time.perf_counter() - self.started

    def _position(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "elapsed_s": self.elapsed(),
        }

    def _loop(self) -> None:
        total, fleet = self.config.iterations, self.fleet
        while self.iteration < total:
            for batch in fleet.epoch(self.epoch, start=self.step_in_epoch):
                for run in self.runs:
                    run.set_lr(self.iteration)
                for run, (loss, correct) in zip(self.runs, fleet.step_all(batch), strict=True):
                    run.add(loss, correct, fleet.batch_size // self.ctx.world_size)
                self.iteration += 1
                self.step_in_epoch += 1
                self.runs[0].console.step()
                self._after_step()
                if self._stop_requested():
                    self._stop_interrupted()
                if self.iteration >= total:
                    break
            if self.step_in_epoch >= fleet.batches_per_epoch:
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
        for run in self.runs:
            self._watch_warmup(run, it)
        if it % c.log_every == 0 or it == c.iterations:
            self._log_train()
        if it % c.eval_every == 0 and it < c.iterations:
            for run in self.runs:
                result = self._eval_row(run, self.data.eval_split, self.data.eval, c.eval_limit)
                if run.schedule.observe_eval(result["top1_error"]):
                    run.console.print(
                        f"validation error plateaued: lr {run.schedule.lr(it):g} from iteration {it}"
                    )
        by_count = c.checkpoint_every is not None and it % c.checkpoint_every == 0
        # The clock is read at log intervals only, and rank 0's reading decides, so all ranks agree.
        read_clock = c.checkpoint_minutes is not None and it % c.log_every == 0
        if by_count or (read_clock and self.ctx.agree(self._clock_due)) or it == c.iterations:
            self._checkpoint()
        stop_if_asked(it)

    def _watch_warmup(self, run: NetRun, it: int) -> None:
        schedule: LRSchedule = run.schedule
        if schedule.wants_train_error(it):
            _, error = run.warm_meter.read(self.ctx)
            if schedule.observe_train_error(error, it):
                run.console.print(
                    f"warm-up over at iteration {it}: training error {100 * error:.1f}% < "
                    f"{100 * run.config.recipe.warmup_error:.0f}%, lr {schedule.lr(it):g} from now on"
                )

    def _clock_due(self) -> bool:
        """Whether ``checkpoint_minutes`` have passed since the last checkpoint (or the start)."""
        return time.perf_counter() - self.checkpoint_clock >= 60 * self.config.checkpoint_minutes

    def _epoch_float(self) -> float:
        return self.iteration / self.data.train.batches_per_epoch

    def _log_train(self) -> None:
        for run in self.runs:
            run.check_finite()
        losses = [run.meter.read(self.ctx) for run in self.runs]
        now = time.perf_counter()
        seconds, since = now - self.log_clock[0], self.log_clock[1]
        self.log_clock = (now, self.iteration)
        images = (self.iteration - since) * self.config.recipe.batch_size
        for run, (loss, error) in zip(self.runs, losses, strict=True):
            row = {
                "kind": "train",
                "iteration": self.iteration,
                "epoch": self._epoch_float(),
                "lr": run.last_lr,
                "train_loss": loss,
                "train_error": error,
                "images_per_s": images / seconds if seconds > 0 else 0.0,
                "time_s": self.elapsed(),
            }
            run.record(row)
            run.console.train_row(row, self.config.iterations)

    def _eval_row(
        self, run: NetRun, split: str, batches: Any, limit: int | None, *, final: bool = False
    ) -> dict[str, Any]:
        run.check_finite()
        started = time.perf_counter()
        result = run.evaluate(batches, limit, final=final)
        row = {"kind": "eval", "iteration": self.iteration, "epoch": self._epoch_float(), "split": split}
        row |= {k: result[k] for k in ("top1_error", "top5_error", "loss", "images")}
        # eval_s lets a reader tell training time from evaluation time (time to accuracy).
        row |= {"eval_s": time.perf_counter() - started, "time_s": self.elapsed()}
        run.record(row)
        run.console.eval_row(row)
        return result

    def _checkpoint(self) -> None:
        position = self._position()
        for run in self.runs:
            run.checkpoint(checkpoint_state(run, self.data, position), self.iteration)
        self.checkpoint_clock = time.perf_counter()

    def _stop_interrupted(self) -> None:
        if any(run.last_checkpoint != self.iteration for run in self.runs):
            self._checkpoint()
        outs = " ".join(str(run.config.out) for run in self.runs)
        where = "its checkpoint is in" if len(self.runs) == 1 else "their checkpoints are in"
        raise Interrupted(
            f"at iteration {self.iteration} of {self.config.iterations}; {where} {outs}: "
            f"continue with `resnetlab train --resume {self.runs[0].config.out}`"
            + ("" if len(self.runs) == 1 else " (and the same for each)")
        )

    def _finish(self) -> list[TrainResult]:
        data, results = self.data, []
        for run in self.runs:
            finals = {data.eval_split: self._eval_row(run, data.eval_split, data.eval, None, final=True)}
            if data.test is not None:
                finals["test"] = self._eval_row(run, "test", data.test, None, final=True)
            summary = self._summary(run, finals)
            if self.ctx.is_main:
                write_summary(run.config.out, summary)
                run.console.print(
                    f"done: {run.config.iterations} iterations in {summary['wall_time_s']:.0f} s; "
                    + ", ".join(f"{s} top-1 error {100 * r['top1_error']:.2f}%" for s, r in finals.items())
                )
            results.append(TrainResult(run.config.out, summary, run.model))
        return results

    def _summary(self, run: NetRun, finals: dict[str, dict[str, Any]]) -> dict[str, Any]:
        c = run.config
        return {
            "model": c.model,
            "params": run.params(),
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
            "step": self.step_choice.mode,
            "step_reason": self.step_choice.reason,
            "compile": c.compile,
            "compile_reason": c.compile_reason,
            "trained_beside": [r.name for r in self.runs if r is not run],
            "measured_step_s": self.measured_step_s,
            "wall_time_s": self.elapsed(),
            "warmup_ended_at": run.schedule.warmup_ended_at,
            "lr_reductions": run.schedule.reductions,
            "final": run.final_block(self.data.eval_split, finals),
            **environment(device_name(self.ctx.device), self.ctx.world_size),
        }
