"""A measured fault and bad-input table: every case of tests/fault_cases.py, one row of
docs/reliability.md each.

Each case is checked for what its row says: the exit code, the whole of stderr (one line, W standing
for the workspace and … for a part that varies; never a traceback), and that every file present
before is byte-identical afterwards (hashed), apart from the files a continuing run is meant to
update. `python tests/test_faults.py` rewrites the table in docs/reliability.md from the cases, and
test_the_doc_shows_these_cases fails when the two differ, so the doc cannot drift from the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault_cases import CASES, Case, as_ordinary_user, cli, write_bytes, write_png
from resnetlab.engine import trainer as trainer_mod

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
BEGIN = "<!-- fault table: generated from tests/fault_cases.py by `python tests/test_faults.py` -->"
END = "<!-- end of the fault table -->"


# ----------------------------------------------------------------------------- the workspace


def _interrupt_at_3(iteration: int) -> None:
    if iteration == 3:
        signal.raise_signal(signal.SIGINT)  # what Ctrl-C does, delivered at a known iteration


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """W: a finished run, the same run stopped by Ctrl-C at iteration 3, a plain file, a read-only
    directory and an image; the cases add what they need in their setup."""
    w = Path(tempfile.mkdtemp(prefix="resnetlab-faults-"))
    w.chmod(0o755)  # the read-only cases run as nobody, who must get in
    patch = pytest.MonkeyPatch()
    patch.setenv("RESNETLAB_DATA_DIR", str(w / "cache"))
    patch.chdir(w)
    try:
        assert cli("train RUN --out W/run", w) == (0, "")
        with pytest.MonkeyPatch.context() as stop:
            stop.setattr(trainer_mod, "stop_if_asked", _interrupt_at_3)
            code, err = cli("train RUN --out W/unfinished", w)
        assert code == 130 and "interrupted at iteration 3 of 6" in err, err
        write_png(w / "img/any.png")
        write_bytes(w / "a-file", b"a file, not a directory\n")
        (w / "ro").mkdir()
        (w / "ro").chmod(0o555)
        yield w
    finally:
        patch.undo()
        for path in (w, *w.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(w)


_digests: dict[tuple, str] = {}


def snapshot(w: Path) -> dict[str, str]:
    """SHA-256 of every file under W but resnetlab's decoded-image cache (memoised per inode, size,
    mtime and ctime: a file cannot change without its ctime changing)."""
    out = {}
    for path in w.rglob("*"):
        rel = path.relative_to(w)
        if rel.parts[0] == "cache" or not path.is_file():
            continue
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in _digests:
            _digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(rel)] = _digests[key]
    return out


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected`` with each … standing for any text."""
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return re.fullmatch(pattern, actual) is not None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, workspace: Path) -> None:
    w = workspace
    if case.setup:
        case.setup(w)
    before = snapshot(w)
    if case.run:
        code, err = case.run(w)
    else:
        with as_ordinary_user() if case.unprivileged else contextlib.nullcontext():
            code, err = cli(case.command, w)
    err = err.replace(str(w), "W")
    assert code == case.code, f"exit {code}, stderr {err!r}"
    assert "Traceback" not in err, err
    if case.message:
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
        assert matches(case.message, err[:-1]), f"stderr {err!r}"
    else:
        assert err == "", f"stderr {err!r}"
    after = snapshot(w)
    changed = [f for f, digest in before.items() if after.get(f) != digest and f not in case.updates]
    assert not changed, f"the user's files changed or went: {changed}"
    if case.check:
        case.check(w)


# ----------------------------------------------------------------------------- the doc's table


def _code_span(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _exit(code: int) -> str:
    return f"killed ({signal.Signals(-code).name})" if code < 0 else str(code)


def table() -> str:
    """The Markdown table of CASES, as docs/reliability.md shows it."""
    lines = [
        "| # | input or fault | command | what happens (all of stderr) | exit | the user's files |",
        "|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(CASES, 1):
        said = _code_span(c.message) if c.message else "nothing on stderr"
        what = f"{said}; {c.note}" if c.note else said
        lines.append(f"| {i} | {c.fault} | {_code_span(c.command)} | {what} | {_exit(c.code)} | {c.files} |")
    return "\n".join(lines) + "\n"


def doc_with_table(doc: str) -> str:
    head, rest = doc.split(BEGIN + "\n", 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def test_the_doc_shows_these_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    doc = DOC.read_text()
    assert doc == doc_with_table(doc), "docs/reliability.md is stale: run `python tests/test_faults.py`"


if __name__ == "__main__":
    DOC.write_text(doc_with_table(DOC.read_text()))
    print(f"wrote the table of {len(CASES)} cases into {DOC}")
