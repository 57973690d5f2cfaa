"""One run per directory: a live run's directory is refused to a second run (exit 2, naming the
directory and the holder's pid) and never deleted; a killed run's lock is taken over; another
model is never trained into a directory that holds a run unless --overwrite says so.

Lock holders are real processes that report once they hold the lock and then wait on their stdin,
so no sleep or timer decides an outcome.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cli_runner import run_cli
from resnetlab.engine import train, train_fleet
from resnetlab.engine.runlock import LOCK_NAME, RunLock
from resnetlab.errors import UserError
from tiny import DATA, after_each_step, interrupt_after, tiny_config

RUN = ("--dataset", DATA, "--batch-size", "32", "--iterations", "2", "--quiet")

# Takes the lock, forks a child when asked (the child says "child" once it runs), says "held",
# and holds the lock until its stdin closes.
HOLDER = r"""
import os, sys
from resnetlab.engine.runlock import RunLock
RunLock(sys.argv[1]).acquire()
if sys.argv[2:] == ["fork"] and os.fork() == 0:
    os.write(1, b"child\n")
    sys.stdin.read()
    os._exit(0)
os.write(1, b"held\n")  # one write each: the two processes share the pipe
sys.stdin.read()
"""


@contextlib.contextmanager
def holder(directory: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """A process holding the lock of ``directory``; it lets go when the block ends (or is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = {proc.stdout.readline() for _ in range(2 if extra else 1)}
        assert lines == ({"held\n", "child\n"} if extra else {"held\n"}), lines
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def train_cli(out: Path, *args: str) -> tuple[int, str]:
    code, _, err = run_cli(["train", "--out", str(out), *args])
    return code, err


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_a_held_directory_is_refused_to_train_resume_and_overwrite_and_nothing_is_deleted(tmp_path):
    out = tmp_path / "run"
    assert train_cli(out, "--model", "resnet20", *RUN) == (0, "")
    before = snapshot(out)
    with holder(out) as proc:
        attempts = {
            "same run": ["--model", "resnet20", *RUN],  # would reuse the finished run
            "resume": ["--resume", str(out), "--quiet"],
            "overwrite": ["--model", "resnet20", *RUN, "--overwrite"],
        }
        for name, args in attempts.items():
            code, err = train_cli(out, *args)
            assert code == 2, f"{name}: exit {code}, {err!r}"
            assert err.count("\n") == 1 and f"{out} is in use" in err and f"(pid {proc.pid})" in err, name
        assert snapshot(out) == {**before, LOCK_NAME: f"{proc.pid}\n".encode()}
    assert train_cli(out, "--model", "resnet20", *RUN, "--overwrite") == (0, "")  # free again


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with holder(out) as proc:
        proc.kill()
        proc.wait(timeout=60)
    assert (out / LOCK_NAME).read_text() == f"{proc.pid}\n"  # left behind, with the dead pid
    assert train_cli(out, "--model", "resnet20", *RUN) == (0, "")
    assert not (out / LOCK_NAME).exists()  # a run that ends removes its lock file


def test_a_forked_child_does_not_keep_a_killed_runs_lock(tmp_path):
    # Decoding pools and DataLoader workers are forked: the lock must end with the run, not with them.
    with holder(tmp_path, "fork") as proc:
        proc.kill()
        proc.wait(timeout=60)
        lock = RunLock(tmp_path)
        lock.acquire()  # the child is alive (blocked on its stdin) and does not hold the lock
        lock.release()


def test_a_run_holds_its_directory_from_start_to_end(tmp_path):
    seen = []

    def try_to_lock(trainer):
        with pytest.raises(UserError, match=rf"in use by another resnetlab run \(pid {os.getpid()}\)"):
            RunLock(trainer.config.out).acquire()
        seen.append(trainer.iteration)

    with pytest.MonkeyPatch.context() as patch:
        after_each_step(patch, try_to_lock)
        train(tiny_config(tmp_path, iterations=3))
    assert seen == [1, 2, 3] and not (tmp_path / LOCK_NAME).exists()

    interrupt_after(tiny_config(tmp_path, seed=1, overwrite=True), 1)
    assert not (tmp_path / LOCK_NAME).exists()  # an interrupted run lets go too


def test_another_model_is_not_trained_into_a_run_directory_without_overwrite(tmp_path):
    out, other = tmp_path / "run", tmp_path / "other"
    assert train_cli(out, "--model", "resnet20", *RUN) == (0, "")
    assert train_cli(other, "--model", "resnet32", *RUN) == (0, "")
    before = snapshot(out)

    code, err = train_cli(out, "--model", "resnet32", *RUN)
    assert code == 2 and "finished run with a different config (differs in model" in err
    code, err = train_cli(out, "--resume", str(other), "--quiet")
    assert code == 2 and f"{out} holds another run (differs in model" in err and "another --out" in err
    (out / "summary.json").unlink()  # unfinished: still another model's run
    del before["summary.json"]
    code, err = train_cli(out, "--model", "resnet32", *RUN)
    assert code == 2 and "holds an unfinished run" in err
    assert snapshot(out) == before

    assert train_cli(out, "--model", "resnet32", *RUN, "--overwrite") == (0, "")
    assert yaml.safe_load((out / "config.yaml").read_text())["model"] == "resnet32"


def test_a_fleet_with_one_held_directory_trains_none_and_frees_the_others(tmp_path):
    free, held = tmp_path / "free", tmp_path / "held"
    configs = [tiny_config(free), tiny_config(held, model="plain20")]
    held.mkdir()
    with holder(held) as proc:
        with pytest.raises(UserError, match=f"{held} is in use .*pid {proc.pid}"):
            train_fleet(configs)
        assert not (free / "checkpoint.pt").exists() and not (free / LOCK_NAME).exists()
    assert [r.out for r in train_fleet(configs)] == [free, held]  # both free again
