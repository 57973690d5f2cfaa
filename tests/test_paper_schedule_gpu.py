"""The GPU fleet script on the CPU with a tiny budget: a thin command line over the engine's fleet, it
trains what `resnetlab train` trains, and what it writes loads everywhere. (The graph step's own
equality with the eager step is tests/test_fleet.py's.)"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import torch

import paper_schedule_gpu as fleet_script
from cli_runner import run_cli
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.config import TrainConfig
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.engine.trainer import train

SPEC = "synthetic:256,64,16,10"


def test_the_script_trains_what_resnetlab_train_trains(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "fleet"
    argv = ["x", "--data", SPEC, "--device", "cpu", "--iterations", "3", "--nets", "resnet20"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--resnet50-steps", "0"])
    fleet_script.main()
    config = TrainConfig(
        model="resnet20",
        dataset=SPEC,
        iterations=3,  # 2 batches of 128 an epoch: the third step starts a new epoch
        out=tmp_path / "lib",
        quiet=True,
        precision="fp32",
        memory_format="channels_last",
    )
    reference = train(config).model.state_dict()
    ours = model_from_checkpoint(load_checkpoint(out / "resnet20" / "checkpoint.pt")).state_dict()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_cpu_run_writes_runs_that_resnetlab_loads(tmp_path: Path, monkeypatch, capsys) -> None:
    out, tar = tmp_path / "fleet", tmp_path / "fleet.tar"
    argv = ["x", "--data", SPEC, "--device", "cpu", "--iterations", "4", "--nets", "resnet20,plain20"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--tar", str(tar), "--quiet"])
    fleet_script.main()
    report = json.loads((out / "fleet.json").read_text())
    assert report["chosen"] == {"precision": "fp32", "iterations": 4}
    assert report["step"]["step"] == "eager" and "cpu" in report["step"]["step_reason"]
    for name in ("resnet20", "plain20"):
        rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r["kind"] == "eval"]
        assert evals[-1]["iteration"] == 4 and evals[-1]["images"] == 64
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["iterations"] == 4 and summary["final"]["test_top1_error"] == evals[-1]["top1_error"]
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
    fast = [{"precision": "fp32", "fleet_step_s": 0.005}, {"precision": "bf16", "fleet_step_s": 0.003}]
    assert fleet_script.choose(fast, 480) == ("fp32", 64000)
    slow = [{"precision": "fp32", "fleet_step_s": 0.015}, {"precision": "bf16", "fleet_step_s": 0.009}]
    assert fleet_script.choose(slow, 390) == ("bf16", 43333)
