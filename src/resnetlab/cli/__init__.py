"""The `resnetlab` command line: argparse subcommands that call the library.

Each subcommand lives in its own module with two functions: ``add_parser(subparsers)`` registers it
and sets ``func`` on its parser to the callable that runs it. User mistakes raise
:class:`resnetlab.errors.UserError` and end here as one line and exit code 2, as do writes the
storage refuses; Ctrl-C is one line and exit code 130 (docs/reliability.md has the whole table).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from resnetlab.errors import UserError

# A write the machine's storage refuses (full disk, quota, file size limit, read-only filesystem) is
# not a bug: it is reported like a user mistake.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})

# Each subcommand and the module that registers it, in the order `resnetlab --help` lists them.
COMMANDS = {
    "models": "resnetlab.cli.models",
    "summary": "resnetlab.cli.models",
    "reproduce": "resnetlab.cli.reproduce",
    "report": "resnetlab.cli.reproduce",
    "data": "resnetlab.cli.data",
    "train": "resnetlab.cli.train",
    "runs": "resnetlab.cli.runs",
    "eval": "resnetlab.cli.evaluate",
    "predict": "resnetlab.cli.predict",
    "export": "resnetlab.cli.export",
    "convert": "resnetlab.cli.convert",
}
COMMAND_MODULES = list(dict.fromkeys(COMMANDS.values()))


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser with every subcommand registered, or, for a ``command`` of :data:`COMMANDS`,
    the parser of that command alone: running one command imports only its own module, so `eval`
    and `predict` never import the trainer that `reproduce` and `train` need."""
    from resnetlab import __version__

    parser = OneLineParser(prog="resnetlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"resnetlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _say(line: str) -> None:
    """One line on stderr, from rank 0 only when several ranks of a job would all say it."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(given[0] if given else None).parse_args(given)
    args.argv = given  # as given, for commands that relaunch
    try:
        code = args.func(args)
    except UserError as exc:
        _say(f"resnetlab: error: {exc}")
        return 2
    except KeyboardInterrupt as exc:  # 130 = 128 + SIGINT, the shell's code for a Ctrl-C
        _say(f"resnetlab: interrupted {exc}".rstrip())
        return 130
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"resnetlab: error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
