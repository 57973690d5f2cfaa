"""The benchmarks' own logic: alternating timing, paired ratios, time-to-accuracy crossings and the
summary's verdicts. The measurements themselves run in `make bench`, not here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bench_time_to_accuracy as tta
import common
import run_all
from resnetlab.engine.rundir import read_metrics


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


def test_curve_from_reads_finished_runs_of_both_recipes_and_draws_them(tmp_path: Path, capsys) -> None:
    from resnetlab.engine import TrainConfig, train
    from resnetlab.recipes import get_recipe

    runs = []
    for name in tta.RECIPES:
        out = tmp_path / name
        config = TrainConfig(
            model="resnet20",
            model_overrides={"layers": [1, 1, 1]},
            dataset="synthetic:128,64,8,4",
            recipe=get_recipe(name, batch_size=32),
            out=out,
            iterations=12,
            eval_every=4,
            eval_limit=64,
            quiet=True,
        )
        train(config)
        runs.append(out)
    curve = tmp_path / "curve.png"
    results = tta.main(["--curve-from", *map(str, runs), "--curve", str(curve), "--threads", "1"])
    got = {r["recipe"]: r for r in results["runs"]}
    assert set(got) == set(tta.RECIPES)
    for name, out in zip(tta.RECIPES, runs, strict=True):
        evals = [r for r in read_metrics(out) if r["kind"] == "eval"]
        assert [r["iteration"] for r in evals] == [4, 8, 12]
        # the curve is the run's own evaluations: minutes since the start and accuracy
        assert got[name]["curve"] == [(r["time_s"] / 60, 1 - r["top1_error"]) for r in evals]
        assert got[name]["final_test_accuracy"] == pytest.approx(1 - evals[-1]["top1_error"])
        assert got[name]["recipe_fields"]["name"] == name
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cifar-fast" in capsys.readouterr().out
