"""torch.compile of the training step: what auto chooses and why, the recorded choice, the eager
fallback when compiling fails, and a compiled run that resumes exactly."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cli_runner import one_line_error, run_cli
from resnetlab.engine import TrainConfig, compiling, train
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.compiling import COMPILE_MIN_ITERATIONS, NO_COMPILER, choose_compile
from resnetlab.engine.config import resolve_compile
from resnetlab.engine.step import TrainStep
from resnetlab.errors import UserError
from tiny import DATA, interrupt_after, tiny_config

CPU = torch.device("cpu")
LONG = COMPILE_MIN_ITERATIONS


@pytest.fixture
def with_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiling, "cxx_compiler", lambda: "g++")


@pytest.fixture
def without_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)


def test_auto_compiles_long_cpu_runs_only(with_compiler: None) -> None:
    plain = {"world_size": 1, "recompute": False}
    long = choose_compile(None, CPU, LONG, **plain)
    assert long.compile and f"a {LONG:,}-iteration run" in long.reason
    short = choose_compile(None, CPU, LONG - 1, **plain)
    assert not short.compile and f"a run of {LONG - 1} iterations is shorter" in short.reason
    budget = choose_compile(None, CPU, None, **plain)
    assert not budget.compile and "time budget" in budget.reason
    cuda = choose_compile(None, torch.device("cuda"), 64000, **plain)
    assert not cuda.compile and "CPUs only" in cuda.reason
    procs = choose_compile(None, CPU, 64000, world_size=2, recompute=False)
    assert not procs.compile and "several processes" in procs.reason
    recompute = choose_compile(None, CPU, 64000, world_size=1, recompute=True)
    assert not recompute.compile and "--checkpoint-activations" in recompute.reason


def test_an_explicit_choice_wins(with_compiler: None) -> None:
    assert choose_compile(True, CPU, 10, world_size=1, recompute=False).reason == "--compile as asked"
    off = choose_compile(False, CPU, 64000, world_size=1, recompute=False)
    assert not off.compile and off.reason == "--no-compile as asked"


def test_without_a_compiler_auto_stays_eager_and_compile_is_refused(without_compiler: None) -> None:
    assert compiling.cxx_compiler() is None
    auto = choose_compile(None, CPU, 64000, world_size=1, recompute=False)
    assert not auto.compile and NO_COMPILER in auto.reason
    with pytest.raises(UserError, match=re.escape(NO_COMPILER)):
        choose_compile(True, CPU, 64000, world_size=1, recompute=False)


def test_a_started_run_keeps_its_choice(with_compiler: None, tmp_path: Path) -> None:
    fresh = resolve_compile(tiny_config(tmp_path, iterations=64000), CPU, 1)
    assert fresh.compile is True and fresh.compile_reason.startswith("auto: compiled")
    # A run from before auto recorded compile: false and no reason: it resumes as it ran.
    old = replace(tiny_config(tmp_path, iterations=64000), compile=False)
    kept = resolve_compile(old, CPU, 1, resumed=True)
    assert kept.compile is False and kept.compile_reason == "as the run started"


def test_no_compile_is_recorded_in_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--dataset", DATA, "--iterations", "2", "--out", str(out)]
    assert run_cli([*args, "--no-compile", "--quiet"])[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compile"] is False and summary["compile_reason"] == "--no-compile as asked"
    assert load_checkpoint(out)["config"]["compile"] is False
    message = one_line_error(["train", "--resume", str(out), "--compile"])
    assert "--compile" in message


def _twin_steps(compile: bool) -> tuple[TrainStep, TrainStep]:
    steps = []
    for c in (False, compile):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        steps.append(TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), compile=c))
    return steps[0], steps[1]


class _FailingBackward(torch.autograd.Function):
    """The identity, whose backward fails as a backward that cannot be compiled would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("inductor could not build its kernels\nsecond line")


def _fails_forward(model):
    def fails(x):
        raise RuntimeError("inductor could not build its kernels\nsecond line")

    return fails


def _fails_backward(model):
    return lambda x: _FailingBackward.apply(model(x))


@pytest.mark.parametrize("broken", [_fails_forward, _fails_backward], ids=["forward", "backward"])
def test_a_compile_failure_falls_back_to_eager(monkeypatch, capsys, broken) -> None:
    """Compiling fails in the forward or in the first backward: the step goes on eager, with the
    very updates an eager step makes."""
    monkeypatch.setattr(torch, "compile", broken)
    eager, fallback = _twin_steps(compile=True)
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    for _ in range(2):
        assert [t.item() for t in eager.step(x, y)] == [t.item() for t in fallback.step(x, y)]
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1  # said once, then eager for good
    assert "RuntimeError: inductor could not build its kernels); training eager" in err
    for a, b in zip(eager.model.parameters(), fallback.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_a_compiled_run_resumes_exactly(tmp_path: Path) -> None:
    if compiling.cxx_compiler() is None:
        pytest.skip("no C++ compiler here: torch.compile cannot build CPU kernels")
    schedule = {"iterations": 8, "log_every": 2, "eval_every": 4, "checkpoint_every": 3, "compile": True}
    reference = train(tiny_config(tmp_path / "reference", **schedule))
    assert reference.summary["compile"] is True
    crashed = tmp_path / "crashed"
    interrupt_after(tiny_config(crashed, **schedule), 5)  # last checkpoint at 3
    assert load_checkpoint(crashed)["iteration"] == 3
    resumed = train(TrainConfig(model=None, dataset=None, out=crashed, resume=crashed, quiet=True))
    assert resumed.summary["compile"] is True and resumed.summary["compile_reason"] == "--compile as asked"
    a, b = resumed.model.state_dict(), reference.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["final"] == reference.summary["final"]


def test_a_finished_run_is_reused_whether_or_not_the_request_compiles(tmp_path: Path) -> None:
    """Compiling changes rounding only, as the step mode does: a finished run asked for again with
    another compile choice (auto now compiling what ran eager before) is reused, not refused."""
    first = train(tiny_config(tmp_path, compile=False))
    stamp = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    again = train(tiny_config(tmp_path, compile=True))
    assert again.summary == first.summary
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == stamp
