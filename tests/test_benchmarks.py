"""The benchmarks' own logic: alternating timing, paired ratios, time-to-accuracy crossings and the
summary's verdicts. The measurements themselves run in `make bench`, not here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import bench_time_to_accuracy as tta
import bench_train
import common
import profile_step
import run_all
from resnetlab.analysis.counts import count_macs, train_step_flops
from resnetlab.engine import compiling
from resnetlab.engine.rundir import read_metrics
from resnetlab.models import build_model


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


def tiny_net_flops_by_hand(shortcut: str) -> int:
    """A training step's FLOPs of resnet20 with one block a stage, widths 4/8/8, on an 8x8 image.

    Forward multiply-adds of a conv: output pixels x output channels x input channels x kernel area.
    """
    stem = 8 * 8 * 4 * 3 * 9  # 3 -> 4 channels, 3x3, 8x8 out
    stage1 = 2 * (8 * 8 * 4 * 4 * 9)  # two 4 -> 4 convs at 8x8
    stage2 = 4 * 4 * 8 * 4 * 9 + 4 * 4 * 8 * 8 * 9  # 4 -> 8 with stride 2 (4x4 out), then 8 -> 8
    stage3 = 2 * 2 * 8 * 8 * 9 + 2 * 2 * 8 * 8 * 9  # 8 -> 8 with stride 2 (2x2 out), then 8 -> 8
    fc = 8 * 10
    projections = (4 * 4 * 8 * 4 + 2 * 2 * 8 * 8) if shortcut in "BC" else 0  # 1x1, stride 2
    weighted = stem + stage1 + stage2 + stage3 + fc + projections
    # forward, weight gradient and input gradient of every layer, less the stem's input gradient
    return 2 * 3 * weighted - 2 * stem


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_train_step_flops_match_a_hand_count_and_what_autograd_runs(shortcut: str) -> None:
    net = build_model("resnet20", layers=[1, 1, 1], widths=[4, 8, 8], shortcut=shortcut)
    flops = train_step_flops(net, 8)
    assert flops == tiny_net_flops_by_hand(shortcut)
    # Independently: torch's FLOP counter over a real forward and backward of one image (it counts
    # convolution backward by the gradients autograd asks for, so the stem's input gradient is out).
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 8, 8)).sum().backward()
    assert counter.get_total_flops() == flops


def test_resnet20_and_56_step_flops_are_six_forward_passes_less_the_stems_input_gradient() -> None:
    stem = 32 * 32 * 16 * 3 * 9
    assert train_step_flops(build_model("resnet20"), 32) == 6 * 40_551_040 - 2 * stem  # about 243 MFLOP
    assert (
        train_step_flops(build_model("resnet56"), 32)
        == 6 * count_macs(build_model("resnet56"), 32) - 2 * stem
    )


def test_flop_fractions_pair_each_contender_with_the_gemm_of_its_precision() -> None:
    # Two rounds; the fp32 GEMM was slowed in the second, and with it the fp32 contender (same busy
    # spell): pairing keeps its fraction at 0.5. The bf16 contender is judged against the bf16 GEMM.
    times = {"NCHW+fp32": [2.0, 4.0], "channels_last+bf16": [1.0, 1.0], "emulated": [3.0, 3.0]}
    gemm = {"fp32": [1.0, 2.0], "bf16": [0.25, 0.25]}
    precisions = {"NCHW+fp32": "fp32", "channels_last+bf16": "bf16", "emulated": "fp16"}
    fractions = bench_train.flop_fractions(times, precisions, gemm, block_flops=10.0, gemm_flops=10.0)
    assert fractions == {"NCHW+fp32": 0.5, "channels_last+bf16": 0.25, "emulated": None}


def test_every_contender_row_shows_rate_ratio_precision_and_fraction(capsys) -> None:
    row = {
        "model": "resnet56",
        "image_size": 32,
        "batch_size": 128,
        "baseline_workers": 2,
        "ours_settings": "channels_last+fp32",
        "train_flops_per_image": 752_000_000,
        "ours_images_per_s": 90.0,
        "baseline_images_per_s": 60.0,
        "ratio": 1.5,
        "paired_ratio": 1.4,
        "ours_flops": 67.7e9,
        "gemm_flops": {"fp32": 120e9},
        "ours_flop_fraction": 0.56,
        "images_per_s": {"baseline": 60.0, "NCHW+fp32": 80.0, "channels_last+fp32": 90.0},
        "paired_vs_baseline": {"baseline": 1.0, "NCHW+fp32": 1.3, "channels_last+fp32": 1.4},
        "precisions": {"baseline": "fp32", "NCHW+fp32": "fp32", "channels_last+fp32": "fp32"},
        "flop_fraction": {"baseline": 0.38, "NCHW+fp32": 0.5, "channels_last+fp32": 0.56},
        "compile_s": {},
    }
    assert bench_train.contender_rows(row) == [
        ["conventional loop (baseline)", 60.0, "1.00x", "fp32", "38%", None],
        ["NCHW+fp32", 80.0, "1.30x", "fp32", "50%", None],
        ["channels_last+fp32 (default)", 90.0, "1.40x", "fp32", "56%", None],
    ]
    bench_train.report({"rows": [row]})
    out = capsys.readouterr().out
    assert "vs conventional" in out and "of GEMM" in out and "752 MFLOP per image" in out
    assert "fp32 120 GFLOP/s" in out
    summary = run_all._summary_rows({"train": {"rows": [row | {"matmul_dtype": "float32"}]}})
    assert ["train resnet56 b128: of float32 GEMM FLOP/s", "56%", ">= 60%", "NO"] in summary
    assert any(
        r[0] == "train resnet56 b128: NCHW+fp32/baseline (contender)" and r[1] == "1.30x, 50% of GEMM"
        for r in summary
    )


def test_contenders_cover_both_layouts_bf16_and_compile_where_they_run(monkeypatch) -> None:
    cpu = torch.device("cpu")
    labels = [s.label for s in bench_train.contenders(cpu, quick=False, compile_ok=True, model="resnet20")]
    assert labels == [
        "NCHW+fp32",
        "channels_last+fp32",
        "channels_last+bf16",
        "channels_last+fp32+compile",
        "channels_last+bf16+compile",
    ]
    # --quick on a CPU whose bf16 is emulated (conftest's): fp32 only
    quick = bench_train.contenders(cpu, quick=True, compile_ok=False, model="resnet56")
    assert [s.label for s in quick] == ["NCHW+fp32", "channels_last+fp32"]
    assert bench_train.ours_settings(cpu, "resnet56").label == "channels_last+fp32"
    # A paper-length run compiles on a CPU with a C++ compiler, when the benchmark may compile.
    monkeypatch.setattr(compiling, "cxx_compiler", lambda: "g++")
    assert bench_train.ours_settings(cpu, "resnet56", compile_ok=True).label == "channels_last+fp32+compile"
    monkeypatch.setattr(compiling, "cxx_compiler", lambda: None)
    assert bench_train.ours_settings(cpu, "resnet56", compile_ok=True).label == "channels_last+fp32"
    assert bench_train.ours_settings(cpu, "resnet18").label == "NCHW+fp32"  # option-B projections
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    ok, why = bench_train.compile_check(cpu, asked=True, quick=False)
    assert not ok and "no C++ compiler" in why


def test_profile_step_lists_the_top_ops_and_the_optimizer_and_data_shares(capsys) -> None:
    found = profile_step.main(["--quick", "--threads", "1", "--model", "resnet20", "--top", "5"])
    assert found["memory_format"] == "channels_last" and found["precision"] == "fp32"
    top = found["top"]
    assert len(top) == 5 and [t["share"] for t in top] == sorted((t["share"] for t in top), reverse=True)
    assert any("convolution" in t["op"] for t in top)
    assert 0 < found["optimizer_share"] < 1 and 0 < found["data_share"] < 1
    assert sum(t["share"] for t in top) <= 1
    out = capsys.readouterr().out
    assert "optimizer step (SGD, inclusive)" in out and "data path" in out


@pytest.mark.slow
def test_profile_step_of_the_compiled_step_lists_inductors_fused_kernels() -> None:
    if compiling.cxx_compiler() is None:
        pytest.skip("no C++ compiler here: torch.compile cannot build CPU kernels")
    argv = ["--quick", "--threads", "1", "--model", "resnet20", "--top", "40", "--compile"]
    found = profile_step.main(argv)
    assert found["compile"] is True
    assert any("fused" in t["op"] for t in found["top"]), [t["op"] for t in found["top"]]


def test_the_summary_gives_each_nets_processes_row_its_gemm_fraction() -> None:
    contenders = ["1 process x 2 threads", "2 processes x 1 thread(s)"]
    row = {"model": "resnet56", "procs": 2, "contenders": contenders, "paired_ratio": 1.12}
    row["flop_fraction"] = dict(zip(contenders, [0.5, 0.56], strict=True))
    rows = run_all._summary_rows({"procs": {"rows": [row, row | {"model": "resnet20"}]}})
    assert rows == [
        ["train resnet56: 2 processes / 1 (whole runs)", "1.12x, 56% of GEMM", "", ""],
        ["train resnet20: 2 processes / 1 (whole runs)", "1.12x, 56% of GEMM", ">= 1.1x", "yes"],
    ]
