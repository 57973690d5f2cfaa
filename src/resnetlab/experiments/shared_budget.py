"""Time budgets of the reproductions: one iteration count shared by every run of a reproduction.

``--budget-minutes`` covers a whole reproduction (all nets, seeds and evaluations). Giving each run
its own minutes would give deeper nets fewer iterations; instead the speed of each net is measured
once on this machine and the single iteration count that fits is used for all of them, so the
comparison stays "same recipe, same schedule".
"""

from __future__ import annotations

import json
import time

import torch

from resnetlab.atomic import atomic_write
from resnetlab.engine.budget import SAFETY_MARGIN, fit_iterations, measure_speed
from resnetlab.engine.distributed import DistContext, device_name, select_device
from resnetlab.engine.evaluate import evaluate
from resnetlab.engine.fleet import Fleet
from resnetlab.engine.run_data import load_run_data
from resnetlab.engine.step import TrainStep
from resnetlab.errors import UserError
from resnetlab.experiments.cifar_nets import CifarNet
from resnetlab.experiments.options import Options
from resnetlab.experiments.training import train_config

RUN_OVERHEAD_S = 5.0  # per run: loading the data, fitting the normaliser, checkpoints, the summary


def resolve_iterations(
    opts: Options, nets: list[CifarNet], default: int, started: float | None = None
) -> int:
    """The iteration count every run of a reproduction gets (all alike, so comparisons are fair).

    ``--budget-minutes`` covers the whole reproduction from ``started`` (a ``time.perf_counter()``
    value; default now): the speed of each net is measured once and the one iteration count that
    fits is remembered in ``OUT/plans.json``, so a rerun finds (and reuses) the same runs instead of
    planning anew.
    """
    if opts.budget_iterations is not None:
        return opts.budget_iterations
    if opts.budget_minutes is None:
        return default
    key = f"{opts.dataset}|{opts.batch_size}|{opts.budget_minutes:g}min|{opts.seeds}|" + ",".join(
        sorted(n.name for n in nets)
    )
    plans_path = opts.out / "plans.json"
    try:
        plans = json.loads(plans_path.read_text()) if plans_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{plans_path} is corrupt: delete it (the next run plans its budget again)") from None
    if key not in plans:
        plans[key] = plan_iterations(opts, nets, started)
        plans_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(plans_path, json.dumps(plans, indent=2) + "\n")
    return int(plans[key])


def plan_iterations(opts: Options, nets: list[CifarNet], started: float | None = None) -> int:
    """Iterations per run such that all runs (every net, every seed) fit in ``opts.budget_minutes``,
    counted from ``started`` (default: now)."""
    started = time.perf_counter() if started is None else started
    budget_s = opts.budget_minutes * 60
    device = select_device(opts.device)
    ctx = DistContext(0, 1, device)
    probe = train_config(opts, nets[0], 100, 0)
    data = load_run_data(probe, ctx)
    step_s = fixed_s = 0.0
    for net in nets:
        model = net.build(len(data.classes)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        limit = 2 * data.eval.batch_size
        speed = measure_speed(
            Fleet(
                [TrainStep(model, optimizer, amp=probe.amp, channels_last=probe.channels_last)], data.train
            ),
            lambda m=model, lim=limit: evaluate(
                m, data.eval, device, len(data.classes), limit=lim, amp=probe.amp
            )["images"],
            budget_s / len(nets),
            ctx,
        )
        evaluated = data.eval_images + opts.evals * min(opts.eval_limit or data.eval_images, data.eval_images)
        step_s += speed.step_s * opts.seeds
        fixed_s += (evaluated * speed.eval_image_s + RUN_OVERHEAD_S) * opts.seeds
    left = budget_s * (1 - SAFETY_MARGIN) - (time.perf_counter() - started) - fixed_s
    iterations = fit_iterations(
        left,
        step_s,
        lambda n: (
            f"--budget-minutes {opts.budget_minutes:g} leaves {n} iterations per run for "
            f"{len(nets) * opts.seeds} runs on {device_name(device)}; allow more minutes, fewer depths or "
            "seeds, or give --budget-iterations"
        ),
    )
    if not opts.quiet:
        print(f"budget {opts.budget_minutes:g} min -> {iterations} iterations per run", flush=True)
    return iterations
