"""The GPU fleet script on the CPU with a tiny budget: it computes what `resnetlab train` computes
(same initial weights, batches, augmentation and SGD update), and what it writes loads everywhere.
The GPU-only parts (graph capture, streams) fall back to this same eager path when they fail."""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import paper_schedule_gpu as fleet_script
from cli_runner import run_cli
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.schedules import LRSchedule
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.engine.trainer import train

SPEC = "synthetic:256,64,16,10"


def _args(tmp_path: Path, **extra) -> argparse.Namespace:
    return argparse.Namespace(seed=0, data=SPEC, out=tmp_path / "out", tar=None, quiet=True, **extra)


@pytest.fixture
def float64_default():
    """Both paths compute in float64: their sums run in different orders (and the kernels' orders
    differ between CPUs and thread counts), which float32 turns into differences of 1e-5 after three
    steps at lr 0.1 (6.3e-5 measured on one CPU), larger than a wrong weight decay would make
    (lr * wd * |w| per step, about 1e-6). In float64 the same reorderings cost about 1e-16
    relative per operation."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("steps", [1, 3])
def test_fleet_steps_equal_the_library_trainer(tmp_path: Path, steps: int, float64_default) -> None:
    torch.manual_seed(123)  # the fleet must not depend on the global RNG state it finds
    data, _ = fleet_script.load_data(SPEC, torch.device("cpu"), None)
    fleet = fleet_script.Fleet(["resnet20"], data, _args(tmp_path), amp=False)
    schedule = LRSchedule(fleet.recipe.scaled(steps))
    net = fleet.nets[0]
    for it in range(steps):  # 3 steps cross an epoch boundary (2 batches of 128 per epoch)
        if it % fleet.tables.steps == 0:
            fleet.begin_epoch(it // fleet.tables.steps)
        net.lr.fill_(schedule.lr(it))
        fleet.step_all()
    config = TrainConfig(
        model="resnet20",
        dataset=SPEC,
        iterations=steps,
        out=tmp_path / "lib",
        quiet=True,
        precision="fp32",  # no autocast: the float64 default dtype carries through
        memory_format="channels_last",
    )
    reference = train(config).model.state_dict()
    ours = net.model.state_dict()
    assert ours["fc.weight"].dtype == reference["fc.weight"].dtype == torch.float64
    worst = max((ours[k].double() - reference[k].double()).abs().max().item() for k in reference)
    # float64 rounding (eps 2.2e-16) amplified by the same factor that turned float32's 6e-8 into
    # 6e-5 (about 1e3) stays below 1e-12 (7e-16 measured); a weight decay 1% off moves the weights by
    # 1.4e-6 in three steps (measured), so 1e-9 tells the two apart with margins of 1e3 both ways.
    assert worst < 1e-9


def test_cpu_run_writes_runs_that_resnetlab_loads(tmp_path: Path, monkeypatch, capsys) -> None:
    out, tar = tmp_path / "fleet", tmp_path / "fleet.tar"
    argv = ["x", "--data", SPEC, "--device", "cpu", "--iterations", "4", "--nets", "resnet20,plain20"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--tar", str(tar), "--quiet"])
    fleet_script.main()
    report = json.loads((out / "fleet.json").read_text())
    assert report["chosen"] == {"precision": "fp32", "iterations": 4}
    assert report["train"]["eager"] == "not on a GPU"
    for name in ("resnet20", "plain20"):
        rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r["kind"] == "eval"]
        assert evals[-1]["iteration"] == 4 and evals[-1]["images"] == 64
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["complete"] and summary["final"]["test_top1_error"] == evals[-1]["top1_error"]
        ckpt = load_checkpoint(out / name / "checkpoint.pt")
        assert ckpt["model_name"] == name and ckpt["iteration"] == 4
        model_from_checkpoint(ckpt)
        code, stdout, _ = run_cli(["eval", str(out / name), "--dataset", SPEC, "--device", "cpu"])
        assert code == 0
        # The CLI's fp32 evaluation agrees with the error the script logged.
        logged = f"top-1 error {100 * evals[-1]['top1_error']:.2f}%"
        assert logged in stdout
    # The record lets `resnetlab report` draw Fig. 6 from the fleet's metrics files.
    code, stdout, _ = run_cli(["report", str(out)])
    assert code == 0 and "residual" in stdout
    assert (out / "figures" / "degradation-fig6.png").is_file()
    with tarfile.open(tar) as packed:
        names = packed.getnames()
    assert "fleet/resnet20/checkpoint.pt" in names and "fleet/fleet.json" in names


def test_choose_keeps_fp32_when_the_paper_schedule_fits() -> None:
    args = argparse.Namespace(iterations=None, precision="fp32")
    fast = [{"precision": "fp32", "fleet_step_s": 0.005}, {"precision": "bf16", "fleet_step_s": 0.003}]
    assert fleet_script.choose(fast, 480, args) == (False, 64000)
    slow = [{"precision": "fp32", "fleet_step_s": 0.015}, {"precision": "bf16", "fleet_step_s": 0.009}]
    assert fleet_script.choose(slow, 390, args) == (True, 43333)
