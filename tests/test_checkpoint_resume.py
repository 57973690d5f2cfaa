"""Checkpoints: atomic writes, safe loading (no code runs), clear errors, and exact resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fault_cases import wait_until_stopped
from resnetlab.atomic import atomic_open
from resnetlab.engine import TrainConfig, train
from resnetlab.engine.checkpoint import load_checkpoint, save_checkpoint
from resnetlab.engine.runlock import LOCK_NAME, RunLock
from resnetlab.engine.testhook import STOP_AT as STOP_AT_ENV
from resnetlab.errors import UserError
from tiny import DATA, interrupt_after, tiny_config

MARKER_NAME = "pwned"
# The runs that crash and resume: checkpoints at 3, 6, 9, 12, log rows every 2, evaluations at 5 and 10.
SCHEDULE = {"iterations": 14, "log_every": 2, "eval_every": 5, "checkpoint_every": 3}


def rows_without_timing(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s", "eval_s")} for r in rows]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def failing(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError), atomic_open(path) as f:
        failing(f)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temp file left behind


def test_pickled_objects_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / MARKER_NAME

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload()}, path)
    with pytest.raises(UserError, match=r"refusing to load .*evil\.pt.*pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",  # empty
        lambda b: b"this is not a checkpoint" * 10,  # garbage
        lambda b: b[:100] + bytes(60) + b[160:],  # bytes zeroed inside the archive
    ],
    ids=["truncated", "empty", "garbage", "zeroed"],
)
def test_damaged_checkpoints_are_clear_errors_naming_the_file(tmp_path, damage):
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.randn(64, 64)}}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(UserError, match=r"bad\.pt") as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)


def test_foreign_files_are_not_resnetlab_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"not a resnetlab checkpoint \(missing model"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(UserError, match=r"has no checkpoint\.pt"):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_after_a_crash_continues_exactly(tmp_path):
    reference = train(tiny_config(tmp_path / "reference", **SCHEDULE))
    crashing_out = tmp_path / "crashed"
    interrupt_after(tiny_config(crashing_out, **SCHEDULE), 8)  # last checkpoint at 6: 7 and 8 are lost
    assert load_checkpoint(crashing_out)["iteration"] == 6
    assert max(r["iteration"] for r in rows_without_timing(crashing_out)) == 8  # rows past the checkpoint

    resumed = train(TrainConfig(model=None, dataset=None, out=crashing_out, resume=crashing_out, quiet=True))
    assert_same_state(resumed.model.state_dict(), reference.model.state_dict())
    assert rows_without_timing(crashing_out) == rows_without_timing(tmp_path / "reference")
    a = load_checkpoint(crashing_out)["optimizer"]["state"]
    b = load_checkpoint(tmp_path / "reference")["optimizer"]["state"]
    assert all(torch.equal(a[i]["momentum_buffer"], b[i]["momentum_buffer"]) for i in a)


def test_resume_from_a_wall_clock_checkpoint_continues_exactly(tmp_path):
    """The default schedule: checkpoints by the clock (a tiny interval is due at every log row)."""
    config = SCHEDULE | {"checkpoint_every": None, "checkpoint_minutes": 1e-9}
    reference = train(tiny_config(tmp_path / "reference", **config))
    crashing_out = tmp_path / "crashed"
    interrupt_after(tiny_config(crashing_out, **config), 7)
    assert load_checkpoint(crashing_out)["iteration"] == 6  # the clock was read at log rows 2, 4, 6

    resumed = train(TrainConfig(model=None, dataset=None, out=crashing_out, resume=crashing_out, quiet=True))
    assert_same_state(resumed.model.state_dict(), reference.model.state_dict())
    assert rows_without_timing(crashing_out) == rows_without_timing(tmp_path / "reference")


def test_resume_at_the_final_checkpoint_only_finishes(tmp_path):
    first = train(tiny_config(tmp_path))
    (tmp_path / "summary.json").unlink()
    again = train(TrainConfig(model="resnet20", dataset=None, out=tmp_path, resume=tmp_path, quiet=True))
    assert again.summary["final"] == first.summary["final"]
    assert_same_state(again.model.state_dict(), first.model.state_dict())


def test_resume_refuses_another_model(tmp_path):
    train(tiny_config(tmp_path))
    with pytest.raises(UserError, match="trained with --model resnet20, not resnet32"):
        train(TrainConfig(model="resnet32", dataset=None, out=tmp_path, resume=tmp_path, quiet=True))


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "resnetlab", "train", "--out", str(out), "--quiet", *extra]


RUN_ARGS = (
    "--model", "resnet20", "--dataset", DATA, "--batch-size", "32",
    "--iterations", "40", "--checkpoint-every", "4", "--log-every", "2", "--eval-every", "20",
    "--deterministic",
)  # fmt: skip


STOP_AT = 22  # last checkpoint at 20: iterations 21-22 and the train row of 22 are lost to the kill


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(STOP_AT_ENV, None)
    reference = tmp_path / "reference"
    subprocess.run(_cli(reference, *RUN_ARGS), env=env, check=True, timeout=300)

    # Killed at a point the test chooses (not where a timer lands): frozen right after iteration
    # STOP_AT, then SIGKILLed, so nothing of the run gets a chance to clean up.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, *RUN_ARGS), env={**env, STOP_AT_ENV: str(STOP_AT)})
    try:
        wait_until_stopped(proc, guard_s=240)  # stopped by RESNETLAB_TEST_STOP_AT, at STOP_AT
        with pytest.raises(UserError, match=rf"in use by another resnetlab run \(pid {proc.pid}\)"):
            RunLock(killed).acquire()  # the live run holds its directory
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(killed)["iteration"] == 20 and not (killed / "summary.json").exists()
    assert max(r["iteration"] for r in rows_without_timing(killed)) == STOP_AT  # rows past the checkpoint
    assert (killed / LOCK_NAME).read_text() == f"{proc.pid}\n"  # left behind: the resume takes it over

    subprocess.run(_cli(killed, "--resume", str(killed)), env=env, check=True, timeout=300)
    a, b = load_checkpoint(killed), load_checkpoint(reference)
    assert a["iteration"] == b["iteration"] == 40
    assert_same_state(a["model"], b["model"])
    assert rows_without_timing(killed) == rows_without_timing(reference)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["final"] == json.loads((reference / "summary.json").read_text())["final"]
    assert not (killed / LOCK_NAME).exists()


def test_resumed_config_keeps_the_checkpoint_settings(tmp_path):
    train(tiny_config(tmp_path, iterations=6))
    (tmp_path / "summary.json").unlink()
    result = train(replace(tiny_config(tmp_path, iterations=6), model=None, dataset=None, resume=tmp_path))
    assert result.summary["iterations"] == 6
