"""The one exception type for mistakes a user can fix.

The CLI turns a :class:`UserError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """A problem with the user's input (argument, file, dataset, checkpoint), not a bug."""


def closest_names(name: str, candidates: list[str], n: int = 3) -> str:
    """A ' (did you mean ...?)' hint listing the candidates closest to ``name``, or ''."""
    import difflib

    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def require_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` of the optional dependencies ``resnetlab[extra]`` installs, for ``purpose``.

    A missing module is a one-line UserError that names the pip command installing it, where a bare
    import would end in an ImportError traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = "is not installed" if exc.name == module else f"cannot be imported ({exc})"
        raise UserError(f"{purpose} needs {module}, which {why}: pip install 'resnetlab[{extra}]'") from None
