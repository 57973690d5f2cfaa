"""Shared test setup.

Every test runs as on a CPU without native bf16, so that ``precision=auto`` resolves to fp32 on every
machine and the suite computes the same things everywhere (an AMX or AVX512-BF16 CPU would otherwise
train every tiny run in bf16, and an AVX2 one in fp32). The layout auto then takes in fp32 depends on
the net alone (channels_last unless it has a strided 1x1 convolution), the same on every CPU.
tests/test_precision.py fakes both kinds of CPU itself; tests that start real processes pass
``--precision`` when their numbers depend on it.

What the tests share is in plain modules beside this one: the tiny runs (``tiny_config``), nets and
synthetic datasets in tiny.py, randomly initialised nets saved as runs in tiny_nets.py, the in-process
CLI in cli_runner.py.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def cpu_without_native_bf16() -> Iterator[None]:
    # Session-wide, so that module-scoped fixtures that train see it too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        patch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        yield


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_reaches_the_tests() -> Iterator[None]:
    """The Ctrl-C tests send SIGINT; a suite started as a background job inherits it ignored, and so
    would every process it starts. A handler of our own (unlike an ignored signal) is reset to the
    default in each child at exec, so children and this process both get Python's usual Ctrl-C."""
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
