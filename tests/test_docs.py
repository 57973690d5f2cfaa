"""The documentation stays true: its commands parse, its links resolve, it stays inside the repository,
and the headline numbers of the README are the numbers of the pages and cards they come from.

Commands are parsed by the CLI's own argparse parser, never run: every ``resnetlab ...`` command line
of a fenced shell block (``\\`` continuations joined, ``# comments`` dropped) and every inline code span
that starts with ``resnetlab`` (also behind ``VAR=value``, ``nice -n N``, ``python -m`` or ``torchrun
... -m``). A ``...`` token stands for "the rest as above" and is dropped; ``resnetlab eval`` alone,
naming a command in prose, only has to name real subcommands, and a span in a sentence may leave out
required arguments (it names a flag); everything else must parse as it stands. The fault table of
docs/reliability.md is left out: tests/test_faults.py runs each of its commands for real.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from resnetlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "benchmarks" / "README.md",
        ROOT / "src" / "resnetlab" / "pretrained" / "README.md",
    ]
)
FAULT_TABLE = re.compile(r"<!-- fault table: .*?<!-- end of the fault table -->", re.S)
SHELL_FENCES = {"", "sh", "bash", "shell", "console", "text"}
# What a resnetlab command may be piped into; anything else after "|" is a paste accident, like
# `reproduce gradients | identity`, which a shell would run as a pipeline.
PIPE_TARGETS = {"head", "tail", "grep", "jq", "less", "tee", "sort", "wc"}


@dataclass(frozen=True)
class Command:
    """One command line found in a page: where, as written, and the resnetlab arguments."""

    page: Path
    line: int
    text: str
    argv: list[str] | None  # None: not a resnetlab command
    problem: str = ""  # set when the shell line itself is wrong (a pipe into a non-command)
    inline: bool = False  # in a code span of the prose, not a shell block

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blank_fault_table(text: str) -> str:
    """``text`` with the generated fault table blanked out, line numbers kept."""
    return FAULT_TABLE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(info string, line number of the first content line, lines) of every fenced code block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^\s*(```+|~~~+)\s*(\S*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, info, start = opening.group(1), opening.group(2), i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        blocks.append((info, start + 1, lines[start:i]))
        i += 1
    return blocks


def prose(text: str) -> str:
    """``text`` with fenced blocks blanked (line numbers kept), for spans and headings."""
    out, fence = [], None
    for line in text.splitlines():
        opening = re.match(r"^\s*(```+|~~~+)", line)
        if fence is None and opening:
            fence = opening.group(1)
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def resnetlab_argv(tokens: list[str]) -> tuple[list[str] | None, str]:
    """The arguments after ``resnetlab`` in a shell line's tokens, and a problem with the line."""
    words = list(tokens)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value prefixes
        words.pop(0)
    if words[:1] == ["nice"]:
        words = words[3:] if words[1:2] == ["-n"] else words[1:]
    if not words:
        return None, ""
    if words[0] == "resnetlab" or words[0].endswith("/bin/resnetlab"):
        rest = words[1:]
    elif words[0] in ("python", "python3", "torchrun") or words[0].endswith("/python"):
        if "-m" not in words or words[words.index("-m") + 1 : words.index("-m") + 2] != ["resnetlab"]:
            return None, ""
        rest = words[words.index("-m") + 2 :]
    else:
        return None, ""
    argv = []
    for i, word in enumerate(rest):
        if set(word) <= set("|&;<>"):  # the shell's operators end the command
            target = rest[i + 1] if i + 1 < len(rest) else ""
            if word == "|" and target not in PIPE_TARGETS:
                return (
                    argv,
                    f"pipes into {target!r}, which is not a shell command: write the alternatives out",
                )
            break
        if word != "...":
            argv.append(word)
    return argv, ""


def _tokens(text: str) -> list[str] | None:
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:  # an unbalanced quote: not a shell line
        return None


def commands(page: Path) -> list[Command]:
    """Every resnetlab command line of ``page``: in shell fences, then in inline code spans."""
    text = _blank_fault_table(page.read_text())
    found = []
    for info, first, lines in fenced_blocks(text):
        if info.lower() not in SHELL_FENCES:
            continue
        joined, start = "", None
        for n, line in enumerate(lines, first):
            start = n if start is None else start
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            joined += line
            tokens = _tokens(joined)
            if tokens:
                argv, problem = resnetlab_argv(tokens)
                if argv is not None:
                    found.append(Command(page, start, joined.strip(), argv, problem))
            joined, start = "", None
    body = prose(text)
    # single-backtick spans (they may wrap onto the next line); ``double`` spans hold quoted output
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", body):
        span = " ".join(m.group(1).split())
        tokens = _tokens(span) if "resnetlab " in span else None
        if tokens:
            argv, problem = resnetlab_argv(tokens)
            if argv is not None:
                line = body.count("\n", 0, m.start()) + 1
                found.append(Command(page, line, span, argv, problem, inline=True))
    return found


def _subcommand_choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse_problem(parser: argparse.ArgumentParser, argv: list[str], inline: bool = False) -> str:
    """'' when ``argv`` parses (or names real subcommands only), else argparse's complaint.

    ``inline``: a code span in a sentence, which may name a command and one of its flags without the
    arguments a whole command line needs (`resnetlab export --format safetensors`); only missing
    required arguments are forgiven there, never an unknown flag, choice or subcommand.
    """
    node, words = parser, list(argv)
    while words and words[0] in _subcommand_choices(node):
        node = _subcommand_choices(node)[words.pop(0)]
    if not words and node is not parser:
        return ""  # `resnetlab eval` in prose: it names a command, it is not a command line
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        said = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {exc.code}"
        if exc.code not in (0, None) and not (inline and "the following arguments are required" in said):
            return said
    return ""


ALL_COMMANDS = [c for page in PAGES for c in commands(page)]


def test_the_pages_hold_commands_to_check() -> None:
    assert len(ALL_COMMANDS) >= 60, len(ALL_COMMANDS)
    pages = {c.page.name for c in ALL_COMMANDS}
    assert {"README.md", "results.md", "studies.md", "training.md", "weights.md"} <= pages


def test_every_documented_command_parses() -> None:
    parser = build_parser()
    bad = []
    for c in ALL_COMMANDS:
        problem = c.problem or parse_problem(parser, c.argv or [], c.inline)
        if problem:
            bad.append(f"{c.where}: `{c.text}`: {problem}")
    assert not bad, "documented commands that the CLI does not accept:\n" + "\n".join(bad)


def test_the_check_catches_unknown_flags_subcommands_and_pipes(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `resnetlab eval runs/x --dataset cifar10 --no-such-flag`.\n\n"
        "```\n"
        "resnetlab models\n"
        "OMP_NUM_THREADS=1 resnetlab reproduce nosuch --out runs/x   # a comment\n"
        "resnetlab reproduce lesion --nets a,b \\\n"
        "    --dataset cifar10 --memory-format contiguous\n"
        "resnetlab reproduce gradients | identity\n"
        "```\n"
        "```python\nresnetlab = 1\n```\n"
        "`resnetlab train` and `resnetlab summary resnet20 ...` are fine, and so is\n"
        "`resnetlab export --format onnx` in a sentence.\n"
        "```\nresnetlab export --format onnx\n```\n"
        "`src/resnetlab/cli` is a path.\n"
    )
    found = commands(page)
    parser = build_parser()
    problems = {c.line: c.problem or parse_problem(parser, c.argv or [], c.inline) for c in found}
    assert len(found) == 9
    assert "--no-such-flag" in problems[1]
    assert problems[4] == ""
    assert "invalid choice: 'nosuch'" in problems[5]
    assert "--memory-format" in problems[6]  # the continuation line is joined, the error at its start
    assert "pipes into 'identity'" in problems[8]
    assert problems[13] == "" and len([c for c in found if c.line == 13]) == 2
    assert problems[14] == ""  # a flag named in a sentence
    assert "required: checkpoint" in problems[16]  # the same as a command line to paste


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page`` (GitHub numbers repeated ones -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", prose(page.read_text()), re.M):
        slug = github_anchor(m.group(1))
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image outside code."""
    body = prose(page.read_text())
    body = re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), body)
    return [(body.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(body)]


def link_problem(page: Path, target: str) -> str:
    """'' when a relative link or image resolves inside the repository (anchor included)."""
    if re.match(r"^[a-z]+:", target):
        return ""  # https:, mailto:: not checked (the suite never uses the network)
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    if not file.is_relative_to(ROOT):
        return "points outside the repository"
    if not file.exists():
        return "does not exist"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"has no heading with the anchor #{anchor}"
    return ""


ALL_LINKS = [(page, line, target) for page in PAGES for line, target in links(page)]


def test_every_relative_link_and_image_resolves() -> None:
    assert len(ALL_LINKS) >= 40, len(ALL_LINKS)
    bad = [
        f"{page.relative_to(ROOT)}:{line}: ({target}) {problem}"
        for page, line, target in ALL_LINKS
        if (problem := link_problem(page, target))
    ]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_the_link_check_sees_missing_files_and_anchors(tmp_path: Path) -> None:
    page = ROOT / "docs" / "results.md"
    assert link_problem(page, "studies.md#lesion-study-veit-wilber--belongie-2016") == ""
    assert (
        link_problem(page, "studies.md#no-such-heading") == "has no heading with the anchor #no-such-heading"
    )
    assert link_problem(page, "nothere.png") == "does not exist"
    assert link_problem(page, "../../outside.md") == "points outside the repository"
    assert github_anchor("The degradation problem in 12 minutes (`make demo`)") == (
        "the-degradation-problem-in-12-minutes-make-demo"
    )


# What a page about the project must not say: how the work was organised, or where things were on
# the machine it was made on.
FORBIDDEN = [
    (re.compile(r"\bissues?\s*#?\d+", re.I), "an issue number"),
    (re.compile(r"\bsessions?\b", re.I), "sessions (how the work was organised)"),
    (re.compile(r"\bhelper [A-Z]\b"), "a helper (how the work was organised)"),
    (re.compile(r"(?<![\w.])\.\./"), "a path outside the repository"),
    (re.compile(r"(?<![\w.~])/(?:work|tmp|home|root|mnt|scratch)/"), "an absolute path of one machine"),
]


def _without_link_targets(text: str) -> str:
    """Link targets (checked by the link test, where ``../`` inside the repository is fine) blanked."""
    return LINK.sub(lambda m: m.group(0).replace(m.group(1), "x" * len(m.group(1))), text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_name_no_issue_sessions_or_outside_paths(page: Path) -> None:
    text = _without_link_targets(page.read_text())
    bad = [
        f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group(0)!r}"
        for pattern, what in FORBIDDEN
        for m in pattern.finditer(text)
    ]
    assert not bad, "\n".join(bad)


# ---- one number, one source ------------------------------------------------------------------------


def _section(page: Path, anchor: str) -> str:
    """The text of the section of ``page`` whose heading has ``anchor``, up to the next heading of
    the same or a higher level."""
    lines = page.read_text().splitlines()
    body = prose(page.read_text()).splitlines()
    for i, line in enumerate(body):
        m = re.match(r"^(#{1,6})\s+(.+?)\s*$", line)
        if m and github_anchor(m.group(2)) == anchor:
            level = len(m.group(1))
            end = next(
                (
                    j
                    for j in range(i + 1, len(body))
                    if (h := re.match(r"^(#{1,6})\s", body[j])) and len(h.group(1)) <= level
                ),
                len(body),
            )
            return "\n".join(lines[i:end])
    raise AssertionError(f"{page.relative_to(ROOT)} has no section #{anchor}")


def headline_rows() -> list[tuple[str, str, str]]:
    """(linked page, anchor, "ours" cell) of every row of the README's "What reproduced" table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("\n## What reproduced\n", 1)[1].strip().split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        target = re.search(r"\]\(([^)#]+)#([^)]+)\)", cells[0])
        assert target, f"README headline row without a link to its section: {line}"
        rows.append((target.group(1), target.group(2), cells[2]))
    return rows


NUMBER = re.compile(r"\d+(?:\.\d+)?(?:%|x\b)|\b\d+\.\d+\b")


def test_each_headline_number_is_the_number_of_its_section() -> None:
    """A number in the README's headline table is copied from the section it links to, so the two
    cannot drift apart unnoticed."""
    rows = headline_rows()
    assert len(rows) >= 6
    for page, anchor, ours in rows:
        section = _section(ROOT / page, anchor)
        numbers = NUMBER.findall(ours)
        assert numbers or ours == "", ours
        missing = [n for n in numbers if n not in section]
        assert not missing, f"README headline {ours!r}: {missing} not in {page}#{anchor}"


def _table6_error(text: str, net: str) -> str:
    row = re.search(rf"^\| {re.escape(net)} \|.*$", text, re.M)
    assert row, net
    return row.group(0).split("|")[5].strip()


@pytest.mark.parametrize(
    ("net", "card"), [("ResNet-20", "resnet20-cifar10"), ("plain-20", "plain20-cifar10")]
)
def test_table6_test_errors_are_the_shipped_cards(net: str, card: str) -> None:
    """The Table 6 rows of docs/results.md and the README's headline are the shipped weights' cards
    (100 - top-1): one measurement, the run's final fp32 evaluation, stated in three places."""
    data = json.loads((ROOT / "src" / "resnetlab" / "pretrained" / f"{card}.card.json").read_text())
    official = [r for r in data["results"] if r["data"] == "cifar10"]
    assert len(official) == 1
    error = f"{100 - official[0]['top1']:.2f}%"
    results = (ROOT / "docs" / "results.md").read_text()
    section = _section(
        ROOT / "docs" / "results.md", "table-6-at-the-papers-full-schedule-on-the-official-cifar-10"
    )
    assert _table6_error(section, net) == error
    assert error in results
    headline = [ours for _, anchor, ours in headline_rows() if anchor.startswith("table-6")]
    assert error in headline


def test_the_readme_names_every_optional_extra() -> None:
    """The install section names each extra of pyproject.toml (and no other) as `pip install` takes it."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    readme = (ROOT / "README.md").read_text()
    install = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r'"\.\[(\w+)\]"', install)) == extras
