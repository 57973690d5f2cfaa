"""Ctrl-C during training: finish the iteration in hand, save a checkpoint there, then stop.

A KeyboardInterrupt raised at an arbitrary point could land between the optimizer step and the
iteration counter, leaving no consistent state to save. So while the training loop runs, SIGINT only
sets a flag; the loop looks at it after each iteration (its log row, evaluation and checkpoint
written), saves a checkpoint at that iteration and raises :class:`Interrupted`, which the CLI reports
as one line and exit code 130. A second Ctrl-C interrupts at once, as usual.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C at a consistent point; the message says where and how to resume."""


class InterruptFlag:
    """Within ``with``: SIGINT sets :attr:`requested` (once) instead of raising KeyboardInterrupt.

    It takes over only Python's own SIGINT handler in the main thread: an ignored SIGINT (a
    background job) or a handler the caller installed stays as it is, and ``enabled=False`` leaves
    plain KeyboardInterrupt. The ranks of a job agree on the iteration to stop at (the trainer
    all-reduces the flag), so each of them sets it.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.requested = False
        self._enabled = enabled
        self._installed = False

    def __enter__(self) -> InterruptFlag:
        if (
            self._enabled
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False
