"""The one exception type for mistakes a user can fix.

The CLI turns a :class:`UserError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (argument, file, dataset, checkpoint), not a bug."""


def closest_names(name: str, candidates: list[str], n: int = 3) -> str:
    """A ' (did you mean ...?)' hint listing the candidates closest to ``name``, or ''."""
    import difflib

    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""
