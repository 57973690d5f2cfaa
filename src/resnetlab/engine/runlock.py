"""One run per directory: the OS file lock a live run holds on its run directory.

``fcntl.flock`` on ``OUT/.run.lock``, held on an open descriptor for as long as ``train`` writes
there. The OS drops the lock when its holder ends however it ends (SIGKILL included), so the file a
killed run leaves behind is simply taken over. The file holds the holder's pid for the message of
whoever is refused; a run that ends normally removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from resnetlab.errors import UserError

LOCK_NAME = ".run.lock"

_held_fds: set[int] = set()  # lock descriptors of this process, closed in forked children
_fork_hook_registered = False


def _close_in_child() -> None:
    # A forked worker (a decoding pool, DataLoader workers) would otherwise share the lock and keep
    # it alive after its parent was killed; closing the child's copy leaves the parent's lock held.
    for fd in _held_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder may have removed it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class RunLock:
    """The exclusive lock on one run directory; :meth:`acquire` refuses while another process holds it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (the directory must exist), or raise a UserError naming the holder's pid."""
        global _fork_hook_registered
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _read_pid(fd)
                os.close(fd)
                if isinstance(exc, BlockingIOError):
                    raise UserError(
                        f"{self.directory} is in use by another resnetlab run (pid {pid}); "
                        "wait for it to finish or stop it, or choose another --out"
                    ) from None
                raise UserError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            if _is_current(fd, self.path):
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=_close_in_child)
            _fork_hook_registered = True
        _held_fds.add(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock; a no-op when not held."""
        if self._fd is None:
            return
        # Removed while still locked, so nobody can take a lock on a file that is going away.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        _held_fds.discard(self._fd)
        os.close(self._fd)
        self._fd = None
