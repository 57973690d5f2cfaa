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
from fault_cases import NO_FCNTL
from resnetlab.engine import runlock, train, train_fleet
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


# Windows' msvcrt.locking, imitated on this POSIX system by a byte-range lock (fcntl.lockf) that,
# like the real one, refuses with EACCES while another process holds the byte and ends with its holder.
FAKE_MSVCRT = r"""
import errno, fcntl, os, types
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK = 2
def _locking(fd, mode, nbytes):
    assert mode == msvcrt.LK_NBLCK
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, nbytes, os.lseek(fd, 0, os.SEEK_CUR))
    except BlockingIOError:
        raise PermissionError(errno.EACCES, "Permission denied") from None
msvcrt.locking = _locking
"""
# A process as on Windows: no fcntl, and the msvcrt above, which appears only after torch is imported
# (the standard library's subprocess takes msvcrt for a sign of Windows and would look for its API).
WINDOWS = FAKE_MSVCRT + NO_FCNTL + "import torch\nsys.modules['msvcrt'] = msvcrt\n"


@contextlib.contextmanager
def holder(directory: Path, *extra: str, preamble: str = "") -> Iterator[subprocess.Popen]:
    """A process holding the lock of ``directory``; it lets go when the block ends (or is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", preamble + HOLDER, str(directory), *extra],
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


def test_without_fcntl_the_msvcrt_lock_refuses_a_live_run_and_takes_over_a_killed_ones(tmp_path, monkeypatch):
    """Where ``import fcntl`` fails (Windows) the lock is msvcrt's: the same refusal, the same takeover."""
    namespace: dict = {}
    exec(FAKE_MSVCRT, namespace)
    monkeypatch.setattr(runlock, "fcntl", None)
    monkeypatch.setattr(runlock, "msvcrt", namespace["msvcrt"])
    out = tmp_path / "run"
    assert train_cli(out, "--model", "resnet20", *RUN) == (0, "")
    with holder(out, preamble=WINDOWS) as proc:
        code, err = train_cli(out, "--model", "resnet20", *RUN, "--overwrite")
        assert code == 2 and err.count("\n") == 1 and f"{out} is in use" in err and f"(pid {proc.pid})" in err
        proc.kill()
        proc.wait(timeout=60)
    assert (out / LOCK_NAME).read_text() == f"{proc.pid}\n"  # left behind by the killed holder
    assert train_cli(out, "--model", "resnet20", *RUN, "--overwrite") == (0, "")
    assert not (out / LOCK_NAME).exists()
