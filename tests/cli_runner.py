"""Run the resnetlab CLI in-process for the tests: its exit code and what it printed."""

from __future__ import annotations

import contextlib
import io

from resnetlab.cli import main


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``resnetlab ARGS``; argparse's own exits count as exit codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def one_line_error(args: list[str]) -> str:
    """The message of ``resnetlab ARGS``, which must fail as a user error: exit 2, one line on stderr."""
    code, _, err = run_cli(args)
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    return err
