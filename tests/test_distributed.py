"""`resnetlab train` under torchrun: 2 CPU processes (gloo) against one process with the same global batch.

How the match is bounded. Both runs start from the same weights and see the same global batches;
DDP averages the two ranks' gradients, so the runs differ only in what BatchNorm normalises with:
- without SyncBN each rank uses the statistics of its own 16 images. The first logged loss is then
  exactly the mean of the losses of the two half-batches under the initial weights, which the test
  recomputes; later losses drift apart by the BN noise only, observed ~1-2% over 6 iterations, so
  the test allows 5% relative;
- with --sync-bn the statistics cover all 32 images, the computation is the single-process one up to
  float summation order (and the sum-of-squares form of the variance), so the losses must agree
  to 1e-4 relative and the weights and BN statistics to 1e-3 relative.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from resnetlab.engine import TrainConfig, build_data, train
from resnetlab.engine.launch import free_port
from resnetlab.models import build_model
from resnetlab.recipes import get_recipe

pytestmark = pytest.mark.slow

DATA = "synthetic:256,128,8,10"
K = 6
ARGS = (
    "--model",
    "resnet20",
    "--dataset",
    DATA,
    "--batch-size",
    "32",
    "--iterations",
    str(K),
    "--log-every",
    "1",
    "--eval-every",
    "100",
    "--deterministic",
    "--quiet",
    "--precision",
    "fp32",
)  # fmt: skip  (the bounds below are float32's; real processes don't see conftest's fake CPU)


def torchrun(out: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "resnetlab", "train", "--out", str(out), *ARGS, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if r["kind"] == "train"]


def single_config(out: Path) -> TrainConfig:
    return TrainConfig(
        model="resnet20",
        dataset=DATA,
        recipe=get_recipe("cifar-paper", batch_size=32),
        out=out,
        iterations=K,
        log_every=1,
        eval_every=100,
        deterministic=True,
        precision="fp32",
        quiet=True,
    )


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    return train(single_config(out))


def first_batch_losses(config: TrainConfig) -> tuple[float, float]:
    """(full-batch loss, mean of the two half-batch losses) of the initial weights on batch 1."""
    torch.manual_seed(config.seed)  # as the trainer does before building the net
    model = build_model("resnet20", num_classes=10)
    x, y = next(iter(build_data(config)[0].epoch(0)))
    with torch.no_grad():
        full = F.cross_entropy(model(x), y).item()
        halves = [F.cross_entropy(model(x[i : i + 16]), y[i : i + 16]).item() for i in (0, 16)]
    return full, sum(halves) / 2


def test_two_processes_without_syncbn(tmp_path, single):
    # Also: an intermediate evaluation of exactly 51 images over two ranks, and checkpoints by the
    # clock (due at every log row), which rank 0 decides for both.
    torchrun(tmp_path, "--eval-every", "3", "--eval-limit", "51", "--checkpoint-minutes", "1e-9")
    ddp, ref = losses(tmp_path), losses(single.out)
    assert len(ddp) == len(ref) == K
    full, sharded = first_batch_losses(single_config(tmp_path / "unused"))
    assert ref[0] == pytest.approx(full, rel=1e-5)
    assert ddp[0] == pytest.approx(sharded, rel=1e-5)  # each rank trained on its own disjoint half
    assert abs(sharded - full) > 1e-4  # ...which is distinguishable from the full batch
    assert all(a == pytest.approx(b, rel=0.05) for a, b in zip(ddp, ref, strict=True))

    # Only rank 0 wrote files; the sharded evaluation was all-reduced over the whole test split.
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.yaml", "metrics.jsonl", "metrics.csv", "checkpoint.pt", "summary.json"
    }  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["images"]) for r in rows if r["kind"] == "eval"] == [(3, 51), (6, 128)]


def test_two_processes_with_syncbn_match_one_process(tmp_path, single):
    torchrun(tmp_path, "--sync-bn")
    ddp, ref = losses(tmp_path), losses(single.out)
    assert all(a == pytest.approx(b, rel=1e-4) for a, b in zip(ddp, ref, strict=True))
    weights = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    for name, value in single.model.state_dict().items():
        assert torch.allclose(weights[name].float(), value.float(), rtol=1e-3, atol=1e-4), name
    ddp_final = json.loads((tmp_path / "summary.json").read_text())["final"]
    assert ddp_final["top1_error"] == single.summary["final"]["top1_error"]


def procs_command(out: Path, *extra: str) -> list[str]:
    """`resnetlab train --procs 2` with the module's arguments (2 threads shared: one per rank)."""
    return [sys.executable, "-m", "resnetlab", "train", "--procs", "2", "--out", str(out), *ARGS, *extra]


@pytest.fixture(scope="module")
def procs_run(tmp_path_factory) -> Path:
    """The run directory of `resnetlab train --procs 2` with the module's arguments."""
    out = tmp_path_factory.mktemp("procs")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(procs_command(out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_procs_flag_starts_the_same_two_rank_job(procs_run, single, tmp_path):
    """--procs 2 runs two ranks of one job itself: each trains on its half of every global batch."""
    assert json.loads((procs_run / "summary.json").read_text())["world_size"] == 2
    _, sharded = first_batch_losses(single_config(tmp_path / "unused"))
    assert losses(procs_run)[0] == pytest.approx(sharded, rel=1e-5)


def test_procs_flag_ctrl_c_stops_every_rank_at_one_checkpoint_and_resumes_exactly(tmp_path):
    """Ctrl-C to the launcher: both ranks agree on one iteration, its checkpoint is written, exit
    130; --resume --procs 2 then ends with the weights of an uninterrupted job, bit for bit."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    longer = ("--iterations", "60", "--checkpoint-minutes", "100")
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    subprocess.run(procs_command(reference, *longer), env=env, check=True, timeout=300, capture_output=True)
    proc = subprocess.Popen(procs_command(stopped, *longer), env=env, stderr=subprocess.PIPE, text=True)
    metrics = stopped / "metrics.jsonl"
    while proc.poll() is None and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("interrupted at iteration") == 1  # one line, from rank 0
    stopped_at = torch.load(stopped / "checkpoint.pt", weights_only=True)["iteration"]
    assert 2 <= stopped_at < 60
    resume = [sys.executable, "-m", "resnetlab", "train", "--resume", str(stopped), "--procs", "2", "--quiet"]
    subprocess.run(resume, env=env, check=True, timeout=300, capture_output=True)
    a = torch.load(stopped / "checkpoint.pt", weights_only=True)
    b = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 60
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


def test_two_torchrun_nodes_end_with_the_weights_of_procs_2(procs_run, tmp_path):
    """The multi-node launch on one machine: two torchrun agents, each a "node" of one process, meet
    at a c10d rendezvous on 127.0.0.1 and form one job of 2 ranks; it ends with the weights and BN
    statistics of `--procs 2` (same seed and settings), bit for bit."""
    if importlib.util.find_spec("torch.distributed.run") is None or not torch.distributed.is_available():
        pytest.skip("torchrun (torch.distributed.run) is not available in this torch build")
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # as each rank of --procs 2 has
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                "--rdzv-id", "two-nodes", "-m", "resnetlab", "train", "--out", str(tmp_path / "nodes"), *ARGS,
            ],
            env=one_thread, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]  # fmt: skip
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert json.loads((tmp_path / "nodes/summary.json").read_text())["world_size"] == 2
    a = torch.load(tmp_path / "nodes/checkpoint.pt", weights_only=True)
    b = torch.load(procs_run / "checkpoint.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == K
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert losses(tmp_path / "nodes") == losses(procs_run)


def test_procs_must_be_positive(tmp_path):
    from cli_runner import run_cli

    code, _, err = run_cli(["train", "--procs", "0", "--out", str(tmp_path), *ARGS])
    assert code == 2 and err.strip() == "resnetlab: error: --procs must be a positive count, got 0"


def test_procs_auto_takes_two_processes_only_on_a_cpu_with_threads_to_share(monkeypatch):
    from resnetlab.engine.launch import choose_procs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    procs, reason = choose_procs("auto")
    assert procs == 2 and reason.startswith("auto: ") and "2 processes of 1" in reason
    assert choose_procs("cpu")[0] == 2
    assert choose_procs("cuda")[0] == choose_procs("mps")[0] == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert choose_procs("cpu") == (1, "auto: one thread on this CPU, nothing to share among processes")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_procs("auto")[0] == 1 and choose_procs("cpu")[0] == 2


def test_procs_auto_with_one_process_says_why_first_and_records_it(tmp_path, monkeypatch):
    from cli_runner import run_cli

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    args = [a for a in ARGS if a != "--quiet"]
    code, out, err = run_cli(["train", "--procs", "auto", "--out", str(tmp_path), *args, "--iterations", "1"])
    assert code == 0, err
    why = "auto: one thread on this CPU, nothing to share among processes"
    assert out.splitlines()[0] == f"processes: 1 x 1 thread(s) ({why})"
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (config["procs"], config["procs_reason"]) == (1, why)


def test_procs_auto_starts_two_ranks_and_a_resume_checks_their_count(tmp_path):
    """Two ranks on 2 threads, recorded; --procs auto on resume reads the count back, and a resume
    in another number of processes is refused (each rank's BN sees its own half batch)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    argv = [sys.executable, "-m", "resnetlab", "train", "--procs", "auto", "--out", str(tmp_path), *ARGS]
    argv.remove("--quiet")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith(
        "processes: 2 x 1 thread(s) (auto: a CPU run with 2 threads"
    )
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["procs"] == 2 and config["procs_reason"].startswith("auto: a CPU run with 2 threads")
    assert json.loads((tmp_path / "summary.json").read_text())["world_size"] == 2

    from cli_runner import one_line_error
    from resnetlab.cli.train import _auto_procs

    resume = argparse.Namespace(resume=str(tmp_path), device="cpu")
    assert _auto_procs(resume) == (2, "auto: 2 as the run started")
    err = one_line_error(["train", "--resume", str(tmp_path), "--quiet"])
    assert "the run trains in 2 process(es), not 1 (resume it with --procs 2 or --procs auto)" in err


def test_procs_auto_refuses_a_run_that_did_not_record_its_count(tmp_path):
    from cli_runner import one_line_error

    train(single_config(tmp_path))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del ckpt["config"]["procs"]  # as written before the count was recorded
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    err = one_line_error(["train", "--resume", str(tmp_path), "--procs", "auto"])
    assert "does not record how many processes trained it" in err
