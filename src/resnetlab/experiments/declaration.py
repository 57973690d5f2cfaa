"""How an experiment declares itself, in one place: its module's ``EXPERIMENT``.

An :class:`Experiment` names the experiment, says in one line what it shows and what it costs,
lists its own command-line arguments (with defaults and help), turns the parsed arguments into its
run function's keyword arguments, and names the run function and the report section. The package
finds every module that has one (:func:`resnetlab.experiments.experiments`), and ``resnetlab
reproduce`` builds a subcommand from each, adding the options all experiments of its kind share:
the training options (budget, seeds, evaluations) for an experiment that trains its nets, the
``--nets`` options for a study of given trained nets. Adding an experiment is writing its module
and its test.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnetlab.errors import UserError
from resnetlab.reporting.report import Section


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


@dataclass(frozen=True)
class Arg:
    """One command-line option: its flag and what argparse's ``add_argument`` takes besides.

    Options of one command with the same ``exclusive`` name exclude each other. An experiment's
    option with the flag of a shared one replaces it, in its place.
    """

    flag: str
    options: dict[str, Any]
    exclusive: str = ""


def arg(flag: str, help: str, *, exclusive: str = "", **options: Any) -> Arg:
    """An :class:`Arg`: ``arg("--grid", "points per side", type=positive_int, default=21)``."""
    return Arg(flag, {"help": help, **options}, exclusive)


def train_nothing(args: argparse.Namespace, what: str) -> None:
    """Refuse the training options in a command that trains nothing (``what`` says why)."""
    given = [
        flag
        for flag, value in (
            ("--budget-iterations", args.budget_iterations),
            ("--budget-minutes", args.budget_minutes),
            ("--seeds", args.seeds),
        )
        if value is not None
    ]
    if given:
        raise UserError(f"{what} and trains none: {', '.join(given)} does not apply")


def _none(args: argparse.Namespace) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Experiment:
    """An experiment as ``resnetlab reproduce`` and the reports see it."""

    name: str  # on the command line and in OUT/<name>.json
    order: int  # its place in `resnetlab reproduce --help` and in reports, lowest first
    summary: str  # one line: what it shows
    run: Callable[..., dict[str, Any]]  # run(opts, **kwargs) -> the record it wrote
    section: Callable[[Path, dict[str, Any]], Section]  # the report section, from the record alone
    trains: bool = True  # False: a study of given trained nets (--nets), which takes no training options
    args: tuple[Arg, ...] = ()  # its own options, after the shared ones
    kwargs: Callable[[argparse.Namespace], dict[str, Any]] = _none  # parsed arguments -> run's keywords
    cost: str = ""  # what a run costs, in work rather than in times measured on one machine

    @property
    def description(self) -> str:
        """The summary and, where there is one, the cost note (``reproduce NAME --help``)."""
        return f"{self.summary}. Cost: {self.cost}" if self.cost else self.summary
