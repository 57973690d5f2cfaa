"""The benchmarks' own logic: alternating timing, paired ratios, time-to-accuracy crossings and the
summary's verdicts. The measurements themselves run in `make bench`, not here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_time_to_accuracy as tta
import common
import run_all


def test_alternate_rotates_who_goes_first_and_times_every_round() -> None:
    calls: list[str] = []
    runners = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = common.alternate(runners, warmup=1, rounds=3, device=torch.device("cpu"))
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    # Ours is 2x faster in every round whose pair ran undisturbed; a busy spell slowed our block in
    # rounds 2-4 and the baseline's in round 3. The ratio of medians is thrown off, the paired one not.
    baseline, ours = [2.0, 2.0, 10.0, 2.0, 2.0], [1.0, 5.0, 5.0, 5.0, 1.0]
    assert common.paired_ratio(baseline, ours) == pytest.approx(2.0)
    assert common.median(baseline) / common.median(ours) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        common.paired_ratio(baseline, ours[:-1])


def evals(*points: tuple[int, float, float]) -> list[dict]:
    """Metrics rows: a train row, then a test evaluation (iteration, end time, accuracy) taking 10 s."""
    out = []
    for it, t_eval, acc in points:
        out.append({"kind": "train", "iteration": it - 1, "time_s": t_eval - 12.0})
        row = {"kind": "eval", "split": "test", "iteration": it, "epoch": it / 100}
        out.append(row | {"time_s": t_eval, "eval_s": 10.0, "top1_error": 1 - acc})
    return out


def test_crossings_take_the_first_evaluation_at_each_threshold_and_leave_out_evaluation_time() -> None:
    found = tta.crossings(evals((100, 60.0, 0.70), (200, 120.0, 0.81), (300, 180.0, 0.86)))
    assert found["80%"]["iteration"] == 200 and found["80%"]["time_s"] == 120.0
    assert found["80%"]["train_time_s"] == pytest.approx(120.0 - 20.0)  # two 10 s evaluations
    assert found["85%"]["iteration"] == 300 and found["85%"]["train_time_s"] == pytest.approx(150.0)
    assert tta.crossings(evals((100, 60.0, 0.79)))["80%"] is None


def test_crossings_without_evaluation_durations_give_wall_time_only() -> None:
    rows = evals((100, 60.0, 0.70), (200, 120.0, 0.81))
    del rows[1]["eval_s"]  # metrics written before the trainer recorded eval_s
    found = tta.crossings(rows)["80%"]
    assert found["time_s"] == 120.0 and found["train_time_s"] is None


def test_summary_marks_ratios_and_upper_limits() -> None:
    assert run_all._row("speed", "1.5x", 1.5, 1.4)[3] == "yes"
    assert run_all._row("speed", "1.3x", 1.3, 1.4)[3] == "NO"
    assert run_all._row("load", "1.5 s", -1.5, -2.0, "< 2 s")[3] == "yes"
    assert run_all._row("load", "2.5 s", -2.5, -2.0, "< 2 s")[3] == "NO"
    assert run_all._row("shown only", "3")[3] == ""
