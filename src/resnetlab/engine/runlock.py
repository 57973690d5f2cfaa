"""One run per directory: the OS file lock a live run holds on its run directory.

An exclusive lock on ``OUT/.run.lock``, held on an open descriptor for as long as ``train`` writes
there: ``fcntl.flock`` on POSIX systems, ``msvcrt.locking`` of one byte on Windows. The OS drops the
lock when its holder ends however it ends (SIGKILL included), so the file a killed run leaves behind
is simply taken over. The file holds the holder's pid for the message of whoever is refused; a run
that ends normally removes it. Where the OS offers neither lock, training refuses in one line rather
than run unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from types import ModuleType

from resnetlab.errors import UserError

fcntl: ModuleType | None
msvcrt: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # everywhere but Windows
    msvcrt = None

LOCK_NAME = ".run.lock"
# The byte msvcrt locks: past the pid, because Windows locks are mandatory and would keep a refused
# run from reading the holder's pid at the start of the file.
LOCK_OFFSET = 1 << 20

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
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    assert msvcrt is not None  # RunLock.acquire refuses before this where neither exists
    os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EDEADLOCK):
            return False
        raise
    return True


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder may have removed it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def lock_holder(directory: Path) -> str | None:
    """The pid of the live process that holds ``directory``'s run lock ("unknown" when it cannot be
    read or the lock cannot be probed), or None when no live process holds it: no lock file, or the
    one a killed run left behind. Probing takes the free lock for an instant and gives it back."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError:
        return "unknown"
    try:
        if fcntl is None and msvcrt is None:
            return "unknown"
        if not _try_lock(fd):
            return _read_pid(fd)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            assert msvcrt is not None
            os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return None
    except OSError:
        return "unknown"
    finally:
        os.close(fd)


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
        if fcntl is None and msvcrt is None:
            raise UserError(
                f"cannot lock {self.directory} for this run: the system has no file lock resnetlab "
                "can use (neither fcntl nor msvcrt), and without one two runs could write one directory"
            )
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
            try:
                locked = _try_lock(fd)
            except OSError as exc:
                os.close(fd)
                raise UserError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            if not locked:
                pid = _read_pid(fd)
                os.close(fd)
                raise UserError(
                    f"{self.directory} is in use by another resnetlab run (pid {pid}); "
                    "wait for it to finish or stop it, or choose another --out"
                )
            if _is_current(fd, self.path):
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the new one
        pid = f"{os.getpid()}\n".encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, pid)
        os.ftruncate(fd, len(pid))  # a dead holder's longer pid may be there
        if not _fork_hook_registered and hasattr(os, "register_at_fork"):  # no fork on Windows
            os.register_at_fork(after_in_child=_close_in_child)
            _fork_hook_registered = True
        _held_fds.add(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock; a no-op when not held."""
        if self._fd is None:
            return
        _held_fds.discard(self._fd)
        if sys.platform == "win32":
            # Windows removes no open file: close first. Whoever opened it meanwhile keeps it open,
            # so the removal fails and their lock stays on a file that stays.
            os.close(self._fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            # Removed while still locked, so nobody can take a lock on a file that is going away.
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
        self._fd = None
