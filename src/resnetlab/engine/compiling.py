"""Whether a run's training step goes through ``torch.compile``: ``--compile``, ``--no-compile``, or
auto (neither given), which compiles where it was measured to pay.

On a CPU inductor fuses the batch-norm, ReLU and addition passes that eager runs one by one (a third
of the eager step's time, see docs/performance.md): the ResNet-20 and ResNet-56 steps ran 1.09-1.16x
faster in bf16 and float32 on 2 cores of an AVX512-BF16 EPYC, 1.02x on an AVX2-only one, for 21-36 s
of compiling once per run (and per resume). Auto therefore compiles a CPU run long enough to win
that back.
On CUDA the whole step is captured as one graph instead (see :mod:`resnetlab.engine.fleet`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import torch

from resnetlab.errors import UserError

# A CPU run of at least this many iterations compiles under auto: ResNet-20 takes ~12 minutes for
# them on 2 cores in bf16, so 10% faster steps repay the ~30 s of compiling twice over and more.
COMPILE_MIN_ITERATIONS = 5000
NO_COMPILER = "no C++ compiler for inductor's CPU kernels (set CXX or install g++)"


@dataclass(frozen=True)
class CompileChoice:
    """Whether the step compiles, and why."""

    compile: bool
    reason: str


def cxx_compiler() -> str | None:
    """The C++ compiler inductor's CPU kernels would be built with, or None where there is none."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++", "cl"):
        if name and shutil.which(name):
            return name
    return None


def choose_compile(
    requested: bool | None,
    device: torch.device,
    iterations: int | None,
    *,
    world_size: int,
    recompute: bool,
) -> CompileChoice:
    """Resolve ``requested`` (True: ``--compile``, False: ``--no-compile``, None: auto) for a run of
    ``iterations`` steps (None: a time budget, its length not known yet) on ``device``."""
    if requested is not None:
        if requested and device.type == "cpu" and cxx_compiler() is None:
            raise UserError(f"--compile is not possible here: {NO_COMPILER}")
        return CompileChoice(requested, f"--{'' if requested else 'no-'}compile as asked")
    blockers = (
        (device.type != "cpu", "auto compiles on CPUs only (on CUDA the step is one captured graph)"),
        (iterations is None, "a time budget is planned from the eager step's speed"),
        (
            iterations is not None and iterations < COMPILE_MIN_ITERATIONS,
            f"a run of {iterations} iterations is shorter than the {COMPILE_MIN_ITERATIONS:,} that "
            "repay compiling",
        ),
        (world_size > 1, "it runs in several processes"),
        (recompute, "--checkpoint-activations recomputes in backward"),
        (cxx_compiler() is None, NO_COMPILER),
    )
    for blocked, why in blockers:
        if blocked:
            return CompileChoice(False, f"auto: eager, since {why}")
    return CompileChoice(True, f"auto: compiled, a {iterations:,}-iteration run on a CPU (fused BN/ReLU/add)")
