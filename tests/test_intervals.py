"""Evaluation and checkpoints that respect the run's length: the default intervals, wall-clock
checkpoints and the budget planner that counts both."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from resnetlab.engine import TrainConfig, net_run, train
from resnetlab.engine import budget as budget_mod
from resnetlab.engine import config as config_mod
from resnetlab.engine.budget import Speed, plan_iterations, run_seconds
from resnetlab.engine.config import DEFAULT_CHECKPOINT_MINUTES, DEFAULT_EVALUATIONS, resolve_intervals
from resnetlab.errors import UserError
from tiny import synthetic_spec, tiny_config

# tiny_config leaves every interval to the defaults unless a test sets one: batches of 32, a 64-image
# test split; on these 512 training images, 16 batches an epoch.
DATA_512 = synthetic_spec(512)


def eval_rows(out: Path) -> list[tuple[int, int]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["iteration"], r["images"]) for r in rows if r["kind"] == "eval"]


@pytest.fixture
def saved_at(monkeypatch) -> list[int]:
    """The iteration of every checkpoint the trainer writes."""
    iterations: list[int] = []
    original = net_run.save_checkpoint

    def spy(state, path):
        iterations.append(state["iteration"])
        original(state, path)

    monkeypatch.setattr(net_run, "save_checkpoint", spy)
    return iterations


def cifar_like(**kw) -> TrainConfig:
    return TrainConfig(model="resnet20", dataset="synthetic", **kw)  # batch 128


@pytest.mark.parametrize("epochs", [0.5, 1, 3, 25, 600])
def test_default_evaluations_obey_the_caps_at_any_length(epochs):
    per_epoch = 390  # CIFAR-10 at batch 128
    total = int(epochs * per_epoch)
    config = resolve_intervals(cifar_like(), total, batches_per_epoch=per_epoch, eval_images=10_000)
    intermediate = (total - 1) // config.eval_every
    assert config.eval_every >= per_epoch  # at most once an epoch
    assert intermediate + 1 <= DEFAULT_EVALUATIONS  # the final evaluation included
    assert intermediate == min(math.ceil(epochs) - 1, DEFAULT_EVALUATIONS - 1)
    assert config.eval_limit == 1000 and config.checkpoint_minutes == DEFAULT_CHECKPOINT_MINUTES
    # Their images stay a small share of the images trained (2% of an epoch's here).
    assert intermediate * config.eval_limit <= 0.15 * total * 128


def test_small_data_evaluates_less_than_once_an_epoch():
    """One batch an epoch: evaluating 64 images after every 128 trained would cost a quarter of the run."""
    config = resolve_intervals(cifar_like(), 40, batches_per_epoch=1, eval_images=64)
    assert config.eval_limit == 64 and config.eval_every == math.ceil(64 / (0.15 * 128)) == 4


def test_explicit_intervals_win():
    given = cifar_like(eval_every=7, eval_limit=20_000, checkpoint_every=3)
    config = resolve_intervals(given, 1000, batches_per_epoch=390, eval_images=10_000)
    assert (config.eval_every, config.eval_limit, config.checkpoint_every) == (7, 20_000, 3)
    assert config.checkpoint_minutes is None  # --checkpoint-every replaces the wall clock
    both = resolve_intervals(
        replace(given, checkpoint_minutes=1.5), 1000, batches_per_epoch=390, eval_images=10_000
    )
    assert (both.checkpoint_every, both.checkpoint_minutes) == (3, 1.5)


def test_a_run_shorter_than_an_epoch_evaluates_and_checkpoints_only_at_its_end(tmp_path, saved_at):
    train(tiny_config(tmp_path, dataset=DATA_512, iterations=10))  # 16 batches an epoch
    assert eval_rows(tmp_path) == [(10, 64)]
    assert saved_at == [10]


def test_intermediate_evaluations_see_the_fixed_subset_once_an_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod, "DEFAULT_EVAL_IMAGES", 16)  # a subset smaller than the split
    train(tiny_config(tmp_path, dataset=DATA_512, iterations=48))  # 3 epochs of 16 batches
    assert eval_rows(tmp_path) == [(16, 16), (32, 16), (48, 64)]


def test_a_long_run_evaluates_at_most_twenty_times(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod, "DEFAULT_EVAL_IMAGES", 8)
    # 50 epochs of 2 batches
    train(tiny_config(tmp_path, dataset=synthetic_spec(64), iterations=100, log_every=50))
    rows = eval_rows(tmp_path)
    assert len(rows) == DEFAULT_EVALUATIONS and rows[-1] == (100, 64)
    assert [it for it, _ in rows[:-1]] == list(range(5, 100, 5)) and {n for _, n in rows[:-1]} == {8}


def test_checkpoints_follow_the_wall_clock(tmp_path, saved_at):
    # A tiny interval is always due: the clock is read at every log interval.
    run = {"dataset": DATA_512, "iterations": 9, "log_every": 2}
    train(tiny_config(tmp_path / "clock", **run, checkpoint_minutes=1e-9))
    assert saved_at == [2, 4, 6, 8, 9]
    saved_at.clear()
    train(tiny_config(tmp_path / "count", **run, checkpoint_every=3))
    assert saved_at == [3, 6, 9]  # --checkpoint-every alone: no clock


def test_budget_plan_counts_the_runs_evaluations_and_checkpoints():
    speed = Speed(step_s=0.1, eval_image_s=0.001, checkpoint_s=1.5)
    left = 3600 * (1 - budget_mod.SAFETY_MARGIN) - 20

    def plan(config: TrainConfig, budget_s: float = 3600) -> int:
        def resolve(n: int) -> TrainConfig:
            return resolve_intervals(config, n, batches_per_epoch=390, eval_images=10_000)

        n = plan_iterations(budget_s, 20, speed, resolve, eval_images=10_000, final_eval_images=10_000)
        assert run_seconds(resolve(n), speed, 10_000, 10_000) <= left
        assert run_seconds(resolve(n + 1), speed, 10_000, 10_000) > left
        return n

    # 19 evaluations of 1,000 images (19 s), the final one of 10,000 (10 s) and a checkpoint every
    # 5 minutes and at the end (12, 18 s).
    assert abs(plan(cifar_like()) - (left - 19 - 10 - 18) / 0.1) <= 1
    # A whole-split evaluation every 10 iterations (1 s each) and a checkpoint every 100.
    costly = plan(cifar_like(eval_every=10, eval_limit=10_000, checkpoint_every=100))
    assert costly == pytest.approx(left / (0.1 + 1.0 + 0.015), rel=0.01)
    with pytest.raises(UserError, match="too short"):
        plan(cifar_like(), budget_s=30)
