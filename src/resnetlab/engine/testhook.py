"""A test-only hook: ``RESNETLAB_TEST_STOP_AT=K`` freezes a training process right after iteration K.

A test that kills a run needs it killed mid-run at a known point; a timer races the run (and lost
once, when the run finished first). With the variable set, the trainer sends itself SIGSTOP once
iteration K's log row, evaluation and checkpoint are written; the test waits for the stop
(``os.waitpid(pid, os.WUNTRACED)``) and then kills it. Unset, as in every normal run, it does nothing.
"""

from __future__ import annotations

import os
import signal

from resnetlab.errors import UserError

STOP_AT = "RESNETLAB_TEST_STOP_AT"


def stop_if_asked(iteration: int) -> None:
    """Stop this process (SIGSTOP) if ``iteration`` is the one named by ``RESNETLAB_TEST_STOP_AT``."""
    value = os.environ.get(STOP_AT)
    if not value:
        return
    if not value.isdigit():
        raise UserError(f"{STOP_AT} must be an iteration number, got {value!r}")
    if iteration == int(value):
        os.kill(os.getpid(), signal.SIGSTOP)
