"""Reports of the reproductions: ``report.md`` and a self-contained ``report.html`` per output folder.

Each reproduction contributes a :class:`Section` (its tables, verdicts and figures, all computed from
the metrics files); one output folder may hold several reproductions, and its report has one section
per reproduction. The HTML embeds every figure as base64 PNG, so it opens anywhere without network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from resnetlab.atomic import atomic_write

PAPER_ITERATIONS = 64_000  # the paper's CIFAR schedule: stop at 64k iterations of batch 128 (Sec. 4.2)


@dataclass
class Table:
    """A table of strings: a title, column headers and rows, with an optional note under it."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Verdict:
    """One conclusion drawn from the data: its sentence (with the numbers) and whether the claim held.

    ``holds`` is True (the paper's claim reproduced), False (not reproduced) or None (the data
    cannot tell, e.g. a budget too short to test it).
    """

    text: str
    holds: bool | None

    @property
    def mark(self) -> str:
        return {True: "REPRODUCED", False: "NOT REPRODUCED", None: "INCONCLUSIVE"}[self.holds]


@dataclass
class Figure:
    """A PNG written by :mod:`resnetlab.reporting.figures` and its caption."""

    path: Path
    caption: str


@dataclass
class Section:
    """Everything the report says about one reproduction."""

    title: str
    claim: str  # what the paper says, in one or two sentences
    meta: dict[str, str]  # command, versions, device, wall time, budget ... (label -> value)
    budget_note: str = ""  # a warning when the budget is far below the paper's
    tables: list[Table] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def budget_note(iterations: int) -> str:
    """A plain statement of how the per-run budget compares with the paper's 64k iterations."""
    share = 100 * iterations / PAPER_ITERATIONS
    if iterations >= PAPER_ITERATIONS:
        return ""
    text = (
        f"Budget: {iterations:,} iterations per run, {share:.2g}% of the paper's {PAPER_ITERATIONS:,} "
        "(learning-rate drops scaled to the same fractions of the budget)."
    )
    if share < 10:
        text += (
            " This is FAR below the paper's schedule: the errors here describe early training only and "
            "are not comparable with the paper's final errors; only the comparisons between nets trained "
            "alike are meaningful."
        )
    return text


LENGTH_HEADER = f"iterations (paper: {PAPER_ITERATIONS:,})"  # the column of run lengths


def run_length(iterations: int) -> str:
    """A run's length beside the paper's: '64,000' or '12,800 (shorter than the paper's)'."""
    return f"{iterations:,}" + ("" if iterations >= PAPER_ITERATIONS else " (shorter than the paper's)")


def lengths_title(lengths: Collection[int]) -> str:
    """Runs' lengths in a figure title: '400 iterations', or 'runs of different lengths'."""
    return f"{min(lengths):,} iterations" if len(set(lengths)) == 1 else "runs of different lengths"


def lengths_note(lengths: Collection[int]) -> str:
    """The budget note of runs of these lengths: :func:`budget_note` where they share one; where they
    differ, a word on those shorter than the paper's (their table shows each length)."""
    if len(set(lengths)) == 1:
        return budget_note(min(lengths))
    if min(lengths) >= PAPER_ITERATIONS:
        return ""
    return (
        f"Some runs are shorter than the paper's {PAPER_ITERATIONS:,} iterations (marked in the "
        "iterations column): their errors are not the paper's conditions."
    )


def _md_table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |"]
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"_{table.note}_"]
    return [*lines, ""]


def to_markdown(sections: list[Section], header: dict[str, str], out: Path) -> str:
    """The Markdown report; figures are linked relative to ``out``."""
    lines = ["# resnetlab reproduction report", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines.append("")
    for s in sections:
        lines += [f"## {s.title}", "", f"**Paper:** {s.claim}", ""]
        lines += [f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}" for k, v in s.meta.items()]
        lines.append("")
        if s.budget_note:
            lines += [f"> **{s.budget_note}**", ""]
        if s.verdicts:
            lines += ["### Verdicts", ""]
            lines += [f"- **{v.mark}**: {v.text}" for v in s.verdicts]
            lines.append("")
        for t in s.tables:
            lines += _md_table(t)
        for fig in s.figures:
            lines += [f"![{fig.caption}]({fig.path.relative_to(out).as_posix()})", "", f"_{fig.caption}_", ""]
        lines += [f"- {n}" for n in s.notes]
        if s.notes:
            lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.budget { border-left: 4px solid #c60; background: #fff4e5; padding: 0.5em 1em; }
.yes { color: #070; font-weight: bold; } .no { color: #b00; font-weight: bold; }
.maybe { color: #850; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-style: italic; margin-bottom: 1.5em; }
"""


def _html_table(t: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f"<p><em>{esc(t.note)}</em></p>" if t.note else ""
    return f"<h4>{esc(t.title)}</h4><table><tr>{head}</tr>{body}</table>{note}"


def to_html(sections: list[Section], header: dict[str, str]) -> str:
    """The self-contained HTML report: figures embedded as base64 PNG, no external resources."""
    esc = html.escape
    cls = {True: "yes", False: "no", None: "maybe"}
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>resnetlab report</title>"]
    parts.append(f"<style>{_CSS}</style></head><body><h1>resnetlab reproduction report</h1><ul>")
    parts += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in header.items()]
    parts.append("</ul>")
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2><p><b>Paper:</b> {esc(s.claim)}</p><ul>")
        parts += [f"<li><b>{esc(k)}</b>: <code>{esc(v)}</code></li>" for k, v in s.meta.items()]
        parts.append("</ul>")
        if s.budget_note:
            parts.append(f"<p class='budget'><b>{esc(s.budget_note)}</b></p>")
        if s.verdicts:
            parts.append("<h3>Verdicts</h3><ul>")
            parts += [
                f"<li><span class='{cls[v.holds]}'>{v.mark}</span>: {esc(v.text)}</li>" for v in s.verdicts
            ]
            parts.append("</ul>")
        parts += [_html_table(t) for t in s.tables]
        for fig in s.figures:
            data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{esc(fig.caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{esc(fig.caption)}</figcaption></figure>"
            )
        if s.notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in s.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: Path, sections: list[Section], header: dict[str, str]) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html``; returns their paths."""
    md, page = out / "report.md", out / "report.html"
    atomic_write(md, to_markdown(sections, header, out))
    atomic_write(page, to_html(sections, header))
    return md, page
