"""Where data and decoded caches live, and how files there are written without ever being half-written.

The cache root is, in order: an explicit ``data_dir`` (``--data-dir``), the ``RESNETLAB_DATA_DIR``
environment variable, ``$XDG_CACHE_HOME/resnetlab``, ``~/.cache/resnetlab``. Every file written
under it goes through a temporary file in the same directory, ``fsync`` and ``os.replace``, so a
crash or Ctrl-C leaves either the old file, the new one, or nothing: never a truncated one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from resnetlab.atomic import atomic_open
from resnetlab.errors import UserError

ENV_DATA_DIR = "RESNETLAB_DATA_DIR"
ENV_CACHE = "RESNETLAB_CACHE"  # resnetlab's own cache (weights, decoded copies of read-only data)


def user_cache_dir() -> Path:
    """resnetlab's directory in the user's cache: ``$XDG_CACHE_HOME/resnetlab`` or ``~/.cache/resnetlab``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "resnetlab"


def own_cache_dir() -> Path:
    """resnetlab's own cache, for what it derives rather than what the user keeps: ``$RESNETLAB_CACHE``,
    else :func:`user_cache_dir`. Decoded copies of data in a read-only data directory go here."""
    root = os.environ.get(ENV_CACHE)
    return Path(root).expanduser() if root else user_cache_dir()


def writable_dir(path: Path) -> bool:
    """Whether files may be created in ``path`` (or, if it does not exist yet, in its nearest existing
    ancestor, where it would be created).

    A directory whose permission bits allow no one to write counts as read-only even for root, whom
    the kernel lets write through them: the bits say the owner wants it left alone (shared data sets
    are often kept that way), and a cache can always go elsewhere.
    """
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    # access() also sees read-only mounts; the effective ids are the ones a write would be checked with
    effective = os.access in os.supports_effective_ids
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK, effective_ids=effective):
        return False
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return not is_root or bool(path.stat().st_mode & 0o222)


def cache_root(data_dir: str | Path | None = None) -> Path:
    """The directory data is looked for and cached in (see the module docstring for the order)."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser()
    return user_cache_dir()


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) or raise a :class:`UserError` saying how to choose another."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the data/cache directory {path} ({exc.strerror or exc}); "
            f"pass --data-dir DIR or set {ENV_DATA_DIR} to a writable directory"
        ) from None
    return path


def save_tensors(path: Path, obj: dict[str, Any]) -> bool:
    """Write ``obj`` (tensors, numbers, strings, lists) to ``path`` atomically with ``torch.save``.

    A cache is an optimisation: if it cannot be written (read-only directory, full disk) this warns
    and returns False instead of failing the run.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            torch.save(obj, f)
    except OSError as exc:
        warnings.warn(
            f"could not write the decoded cache {path} ({exc}); the next run will decode again", stacklevel=2
        )
        return False
    return True


def load_tensors(path: Path) -> dict[str, Any] | None:
    """Load a cache written by :func:`save_tensors`, or None when absent or unreadable.

    The tensors are memory-mapped (copy-on-write): loading takes milliseconds, pages come from the
    OS page cache as they are used, and processes on one machine (e.g. torchrun ranks) share them.
    Caches are only ever replaced by rename, never rewritten in place, so a mapping stays valid.
    An unreadable cache (e.g. written by an older version) is treated as absent; it is rebuilt from
    the source data and overwritten atomically.
    """
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, mmap=True)
    except Exception:  # a damaged cache of ours is never fatal: the source data is still there
        warnings.warn(f"ignoring the unreadable cache {path}; it will be rebuilt", stacklevel=2)
        return None
