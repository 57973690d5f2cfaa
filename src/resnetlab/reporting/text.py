"""The words and numbers of report sections: how a verdict says whether a claim held, errors as
percentages and points, and the table that sets a paper's findings beside ours."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resnetlab.reporting.report import Table


def said(holds: bool) -> str:
    """How a verdict's sentence ends: "reproduced" or "not reproduced"."""
    return "reproduced" if holds else "not reproduced"


def pct(x: float | None) -> str:
    """A fraction as a percentage, "12.34%"; "n/a" for None (nothing measured)."""
    return "n/a" if x is None else f"{100 * x:.2f}%"


def pts(x: float) -> str:
    """A difference of fractions in percentage points, signed: "+1.23 points"."""
    return f"{100 * x:+.2f} points"


def per_net(
    nets: list[dict[str, Any]], pick: Callable[[dict[str, Any]], bool], text: Callable[[dict[str, Any]], str]
) -> str:
    """``text(net)`` of every net ``pick`` chooses, joined by "; " ("no such net measured" if none)."""
    return "; ".join(text(n) for n in nets if pick(n)) or "no such net measured"


def beside_paper(title: str, source: str, rows: list[list[str]]) -> Table:
    """A table of a paper's findings (rows of finding, what ``source`` found, what we found)."""
    return Table(title, ["finding", source, "ours"], rows)
