"""Learning-rate schedules: step milestones, cosine, linear, plateau, and the ResNet-110 warm-up."""

from __future__ import annotations

import itertools
import math

import pytest

from resnetlab.engine.schedules import WARMUP_WINDOW, LRSchedule
from resnetlab.recipes import get_recipe, recipe_for


def test_step_divides_by_ten_at_the_milestones():
    s = LRSchedule(get_recipe("cifar-paper"))
    assert s.lr(0) == 0.1 and s.lr(31999) == 0.1
    assert s.lr(32000) == pytest.approx(0.01) and s.lr(47999) == pytest.approx(0.01)
    assert s.lr(48000) == pytest.approx(0.001) and s.lr(63999) == pytest.approx(0.001)


def test_compressed_step_schedule_has_the_same_shape():
    full = LRSchedule(get_recipe("cifar-paper"))
    short = LRSchedule(get_recipe("cifar-paper").scaled(640))
    for frac in (0.0, 0.3, 0.49, 0.51, 0.74, 0.76, 0.99):
        assert short.lr(int(frac * 640)) == pytest.approx(full.lr(int(frac * 64000)))


def test_cosine_and_linear_decay_to_zero():
    cos = LRSchedule(get_recipe("cifar-paper", schedule="cosine", iterations=100))
    lin = LRSchedule(get_recipe("cifar-paper", schedule="linear", iterations=100))
    assert cos.lr(0) == lin.lr(0) == 0.1
    assert cos.lr(50) == pytest.approx(0.05) and lin.lr(50) == pytest.approx(0.05)
    assert lin.lr(99) == pytest.approx(0.001) and 0 < cos.lr(99) < 1e-3
    for s in (cos, lin):
        rates = [s.lr(t) for t in range(100)]
        assert all(a >= b for a, b in itertools.pairwise(rates))
    assert cos.lr(25) > lin.lr(25)  # cosine stays high longer


def test_plateau_waits_for_patience_and_resets_on_improvement():
    s = LRSchedule(get_recipe("imagenet-paper", plateau_patience=2))
    assert not s.observe_eval(0.5)  # first = best
    assert not s.observe_eval(0.5)  # 1 bad evaluation
    assert not s.observe_eval(0.4)  # improvement resets the count
    assert not s.observe_eval(0.45)
    assert s.observe_eval(0.41)  # second bad one in a row: reduce
    assert s.lr(10) == pytest.approx(0.01)
    assert not s.observe_eval(0.42) and s.observe_eval(0.43)
    assert s.lr(10) == pytest.approx(0.001) and s.reductions == 2


def test_step_schedules_ignore_evaluations():
    s = LRSchedule(get_recipe("cifar-paper"))
    assert not any(s.observe_eval(0.9) for _ in range(10))


def test_warmup_holds_001_until_error_below_80_percent_then_returns_to_01():
    s = LRSchedule(recipe_for("cifar-paper", "resnet110"))
    assert s.warming and s.lr(0) == 0.01
    assert s.wants_train_error(WARMUP_WINDOW) and not s.wants_train_error(WARMUP_WINDOW + 1)
    assert not s.observe_train_error(0.85, 10)
    assert not s.observe_train_error(0.80, 20)  # "below 80%": 80% itself is not enough
    assert s.lr(25) == 0.01
    assert s.observe_train_error(0.79, 30)
    assert s.warmup_ended_at == 30
    assert s.lr(30) == 0.1 and s.lr(31999) == 0.1 and s.lr(32000) == pytest.approx(0.01)
    # It never comes back, whatever the error does later.
    assert not s.observe_train_error(0.95, 40) and s.lr(40) == 0.1
    assert not s.wants_train_error(40)


def test_warmup_never_exceeds_the_schedule():
    s = LRSchedule(recipe_for("cifar-paper", "resnet110").scaled(10))  # milestones at 5 and 8
    assert s.lr(9) == pytest.approx(0.001)


def test_state_round_trip():
    s = LRSchedule(recipe_for("imagenet-paper", "resnet50", warmup_lr=0.01))
    s.observe_train_error(0.5, 10)
    s.observe_eval(0.3)
    s.observe_eval(0.31)
    t = LRSchedule(s.recipe)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()
    assert all(math.isclose(t.lr(i), s.lr(i)) for i in range(0, 1000, 97))
