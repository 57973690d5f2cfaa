"""`resnetlab runs` and resnetlab.engine.run_status: a run's state (finished, training, stopped, not
started), progress, errors, rate and time left, read from its directory alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_runner import one_line_error, run_cli
from resnetlab.engine import train
from resnetlab.engine.run_status import (
    _evaluations_between,
    describe,
    duration,
    find_runs,
    run_status,
)
from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.engine.runlock import LOCK_NAME, RunLock, lock_holder
from resnetlab.errors import UserError
from tiny import interrupt_after, tiny_config

TOTAL, EVERY, STOP = 12, 4, 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A run stopped (as by Ctrl-C) at iteration STOP of TOTAL, and a finished one."""
    base = tmp_path_factory.mktemp("runs")
    stopped, finished = base / "stopped", base / "finished"
    interrupt_after(
        tiny_config(stopped, iterations=TOTAL, log_every=2, eval_every=EVERY, checkpoint_every=2), STOP
    )
    train(tiny_config(finished, iterations=TOTAL, log_every=2, eval_every=EVERY))
    return {"stopped": stopped, "finished": finished}


def test_a_stopped_run_reports_its_progress_rate_and_time_left(runs):
    rows = read_metrics(runs["stopped"])
    train_rows = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    done = max(r["iteration"] for r in rows)
    s = run_status(runs["stopped"])
    assert s.state == "stopped" and s.pid is None
    assert (s.iteration, s.total) == (done, TOTAL) and 0 < done < TOTAL
    assert s.train_error == train_rows[-1]["train_error"]
    assert (s.test_iteration, s.test_error) == (evals[-1]["iteration"], evals[-1]["top1_error"])
    best = min(evals, key=lambda r: r["top1_error"])
    assert (s.best_test_iteration, s.best_test_error) == (best["iteration"], best["top1_error"])
    rate = statistics.median(r["images_per_s"] for r in train_rows[-10:])
    assert s.images_per_s == pytest.approx(rate)
    # Evaluations still to come: at every multiple of EVERY after `done`, and the last iteration's.
    to_come = {i for i in range(EVERY, TOTAL + 1, EVERY) if i > done} | {TOTAL}
    assert s.evaluations_left == len(to_come)
    eval_s = statistics.median(r["eval_s"] for r in evals)
    assert s.seconds_left == pytest.approx((TOTAL - done) * 32 / rate + len(to_come) * eval_s)
    assert s.checkpoint_age_s is not None and s.checkpoint_age_s >= 0


def test_a_finished_run_reports_its_final_errors(runs):
    s = run_status(runs["finished"])
    summary = read_summary(runs["finished"])
    train_rows = [r for r in read_metrics(runs["finished"]) if r["kind"] == "train"]
    last_tenth = [r["train_error"] for r in train_rows if r["iteration"] > 0.9 * TOTAL]
    assert s.state == "finished" and (s.iteration, s.total) == (TOTAL, TOTAL)
    assert s.test_error == pytest.approx(summary["final"]["top1_error"])
    assert s.train_error == pytest.approx(statistics.fmean(last_tenth))
    assert s.seconds_left is None and s.evaluations_left is None


def test_the_live_holder_of_the_lock_makes_a_run_training(runs):
    run = runs["stopped"]
    lock = RunLock(run)
    lock.acquire()
    try:
        assert lock_holder(run) == str(os.getpid())
        s = run_status(run)
        assert (s.state, s.pid) == ("training", str(os.getpid()))
    finally:
        lock.release()
    assert run_status(run).state == "stopped"
    # The file a killed run leaves behind (nobody holds its lock) is not a live run.
    (run / LOCK_NAME).write_text("999999\n")
    try:
        assert lock_holder(run) is None and run_status(run).state == "stopped"
    finally:
        (run / LOCK_NAME).unlink()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="no /proc to tell a stopped process")
def test_a_stopped_holder_makes_a_run_paused(runs):
    run = runs["stopped"]
    hold = (
        "import sys, time; from resnetlab.engine.runlock import RunLock; "
        "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert (run_status(run).state, run_status(run).pid) == ("training", str(proc.pid))
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while run_status(run).state != "paused" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (run_status(run).state, run_status(run).pid) == ("paused", str(proc.pid))
        assert f"{run}: resnet20, cifar-paper on synthetic" in describe(run_status(run))[0]
        assert describe(run_status(run))[0].endswith(f"; paused (pid {proc.pid})")
        os.kill(proc.pid, signal.SIGCONT)
    finally:
        proc.kill()
        proc.wait()
    assert run_status(run).state == "stopped"


def test_a_run_whose_evaluations_were_not_timed_counts_them_as_free(tmp_path, runs):
    old = shutil.copytree(runs["stopped"], tmp_path / "old")
    rows = read_metrics(old)
    for r in rows:
        r.pop("eval_s", None)
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s, before = run_status(old), run_status(runs["stopped"])
    assert s.evaluations_left == before.evaluations_left > 0
    rate = before.images_per_s
    assert s.seconds_left == pytest.approx((TOTAL - s.iteration) * 32 / rate)


def test_a_directory_with_only_its_config_has_not_started(tmp_path, runs):
    run = tmp_path / "new"
    run.mkdir()
    (run / "config.yaml").write_bytes((runs["finished"] / "config.yaml").read_bytes())
    s = run_status(run)
    assert (s.state, s.iteration, s.total) == ("not started", 0, TOTAL)


def test_find_runs_takes_run_directories_and_folders_of_them(tmp_path, runs):
    assert find_runs([runs["stopped"]]) == [runs["stopped"]]
    assert find_runs([runs["stopped"].parent]) == sorted(runs.values())
    out = tmp_path / "reproduce-out"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "a").symlink_to(runs["finished"], target_is_directory=True)
    assert find_runs([out]) == [out / "runs" / "a"]
    with pytest.raises(UserError, match="does not exist"):
        find_runs([tmp_path / "none"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="neither a run directory nor a folder"):
        find_runs([empty])


@pytest.mark.parametrize(
    ("done", "total", "every", "expected"),
    [(6, 12, 4, 2), (6, 10, 4, 2), (8, 10, 4, 1), (10, 10, 4, 0), (0, 5, None, 1), (5, 5, None, 0)],
)
def test_evaluations_to_come(done, total, every, expected):
    assert _evaluations_between(done, total, every) == expected


def test_durations_read_in_their_two_largest_units():
    assert [duration(s) for s in (0, 59.9, 60, 3599, 3600, 3660 * 2, 86400 + 7200)] == [
        "0 s", "59 s", "1 min", "59 min", "1 h 0 min", "2 h 2 min", "1 d 2 h",
    ]  # fmt: skip


def test_the_command_prints_each_run_and_draws_their_curves(tmp_path, runs):
    figure = tmp_path / "curves.png"
    code, out, err = run_cli(["runs", str(runs["stopped"].parent), "--plot", str(figure)])
    assert code == 0, err
    assert f"{runs['stopped']}: resnet20, cifar-paper on synthetic" in out and "; stopped" in out
    assert f"continue it: resnetlab train --resume {runs['stopped']}" in out
    assert f"{runs['finished']}: resnet20" in out and "; finished" in out and "final test error" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run_cli(["runs", str(runs["finished"]), "--json"])
    expected = run_status(runs["finished"]).as_dict()
    (printed,) = json.loads(out)
    assert code == 0 and printed.pop("checkpoint_age_s") >= 0  # seconds since, so a moment apart
    assert printed == {k: v for k, v in expected.items() if k != "checkpoint_age_s"}


def _dir_with(path: Path, name: str, text: str) -> str:
    """``path`` made a directory holding ``name`` with ``text``; its path, for the command line."""
    path.mkdir(exist_ok=True)
    (path / name).write_text(text)
    return str(path)


def test_bad_input_is_one_line_and_exit_2(tmp_path, runs):
    assert "does not exist" in one_line_error(["runs", str(tmp_path / "none")])
    assert "give a name ending in .png" in one_line_error(["runs", str(runs["finished"]), "--plot", "x.jpg"])
    cases = [
        ("metrics.jsonl", '{"kind": "train", "iteration": 2}\n{"kind": tr\n', "damaged at line 2"),
        (
            "metrics.jsonl",
            '{"kind": "train", "iteration": 2, "train_error": 0.5}\n[1, 2]\n',
            "row 2 is not a",
        ),
        ("metrics.jsonl", '{"kind": "eval", "iteration": 2}\n', "row 1 is not a metrics row"),
        ("config.yaml", "model: [resnet20\n", "cannot read"),
    ]
    for i, (name, text, message) in enumerate(cases):
        assert message in one_line_error(["runs", _dir_with(tmp_path / f"bad{i}", name, text)])
