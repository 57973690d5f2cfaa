"""``resnetlab train --procs N``: one DDP job of N local processes, started without torchrun.

Each process gets the variables torchrun would set (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT),
so it joins the job through the same :func:`resnetlab.engine.distributed.setup_distributed`, and
``OMP_NUM_THREADS`` = the launcher's threads / N, so the ranks share the cores instead of
oversubscribing them. On a CPU the ranks use gloo and split every global batch: two ranks of 64 images
with BN per rank is the paper's own CIFAR setting (batch 128 on two GPUs).

``--procs auto`` (:func:`choose_procs`) takes 2 processes on a CPU-only machine with at least two
threads to share, one process elsewhere; the launcher prints the choice and its reason first and the
ranks record both in config.yaml (``procs``, ``procs_reason``; the reason reaches them through
``PROCS_REASON_ENV``), so a resumed run starts the same number of processes.

Why not torchrun's agent: on Ctrl-C it sends SIGTERM to the ranks and kills them after a grace period,
so no rank can finish its iteration and write the checkpoint. Here the ranks run in their own process
group, the launcher forwards each Ctrl-C to every rank once, and the ranks agree on the iteration to
stop at (see the trainer), so Ctrl-C and --resume behave as in one process. A rank that fails makes the
launcher stop the others (they would wait on it forever) and return its exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

import torch

from resnetlab.errors import UserError

# Seconds the other ranks get to end on their own after one failed (a UserError is raised on every
# rank at once, and they should all exit 2 themselves) before they are terminated.
GRACE_S = 30.0
# How the launcher tells its ranks why it started that many of them (recorded in their config).
PROCS_REASON_ENV = "RESNETLAB_PROCS_REASON"


def choose_procs(device: str) -> tuple[int, str]:
    """What ``--procs auto`` starts for a run on ``device`` (auto, cpu, cuda or mps), and why.

    Two processes of half the threads each where the run trains on a CPU with at least two threads:
    the ranks' small ops (BN, ReLU, the update) run side by side instead of each split across every
    thread, and a batch of 128 in two halves with BN per rank is the paper's CIFAR setting (batch 128
    on two GPUs). One process on a GPU (it is fed by one) and with a single thread (nothing to share).
    """
    on_gpu = device in ("cuda", "mps") or (device == "auto" and torch.cuda.is_available())
    if on_gpu:
        return 1, "auto: one process drives the GPU"
    threads = torch.get_num_threads()
    if threads < 2:
        return 1, "auto: one thread on this CPU, nothing to share among processes"
    return 2, (
        f"auto: a CPU run with {threads} threads: 2 processes of {threads // 2}, each a half batch with "
        "its own BN statistics (the paper's 2-GPU setting)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the rendezvous of the ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threads_per_process(procs: int) -> int:
    """The launcher's intra-op threads divided among ``procs`` ranks (at least one each)."""
    return max(1, torch.get_num_threads() // procs)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launch_local(procs: int, argv: list[str], reason: str | None = None) -> int:
    """Run ``python -m resnetlab *argv`` as ``procs`` ranks of one job; returns the job's exit code
    (rank 0's when all ended, else the first failure's). ``reason`` (why that many) goes to the
    ranks' config."""
    if procs < 1:
        raise UserError(f"--procs must be a positive count, got {procs}")
    port, threads = free_port(), threads_per_process(procs)
    base = {
        **os.environ,
        "WORLD_SIZE": str(procs),
        "LOCAL_WORLD_SIZE": str(procs),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": str(threads),
    }
    if reason is not None:
        base[PROCS_REASON_ENV] = reason
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "resnetlab", *argv],
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            start_new_session=True,  # a terminal's Ctrl-C reaches the launcher only; it forwards one
            # A launcher started where SIGINT is ignored (a background job) must not pass that on:
            # the forwarded Ctrl-C has to reach each rank's Python handler.
            preexec_fn=_default_sigint,
        )
        for r in range(procs)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in ranks:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGINT, forward)
    try:
        return _wait(ranks)
    finally:
        signal.signal(signal.SIGINT, previous)
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait(ranks: list[subprocess.Popen]) -> int:
    """Wait for every rank; after the first failure give the rest GRACE_S, then terminate them."""
    failed_at: float | None = None
    failure = 0
    while any(p.poll() is None for p in ranks):
        bad = [p.returncode for p in ranks if p.returncode not in (None, 0)]
        if bad and failed_at is None:
            failed_at, failure = time.monotonic(), bad[0]
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            for p in ranks:
                if p.poll() is None:
                    p.terminate()
        time.sleep(0.05)
    # A rank killed by a signal has returncode -SIG; report it as a shell would, 128 + SIG.
    codes = [c if c >= 0 else 128 - c for c in (p.returncode for p in ranks)]
    if failure:
        return failure if failure >= 0 else 128 - failure
    return next((c for c in codes if c != 0), codes[0])
