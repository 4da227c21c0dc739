"""File locks: flock(2) on a path, held until released or until the holder dies.

The one helper behind every lock of ours (the apply lock under <root>/run, the simulated
kernel's model lock): a deadline, a cancellation asked between tries, a single non-blocking try
(timeout 0), re-entrancy within one thread when asked, and a note of the holder in the file for
the next waiter's message. The kernel drops an flock when its holder dies, so a killed holder
never wedges the next one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from sriov_node.files import UnsafeFile, kind, read_regular

POLL = 0.05  # seconds between two tries while another process holds the lock


class LockUnavailable(Exception):
    """The lock was not taken: another process holds it. `holder` is its note ("" when unknown)."""

    def __init__(self, path: str, holder: str, message: str):
        super().__init__(message)
        self.path = path
        self.holder = holder


class FlockFailed(OSError):
    """flock(2) itself failed (not because another process holds the lock): errno and path as OSError's."""


class LockTimedOut(LockUnavailable):
    """Still held by another process when the deadline passed (at once for timeout 0)."""


class LockCancelled(LockUnavailable):
    """`cancelled()` answered True while waiting."""


def _never() -> bool:
    return False


def read_holder(path: str) -> str:
    """The holder's note in the lock file (e.g. "pid 42"), "" when it cannot be read."""
    try:
        return read_regular(path, limit=4096, follow=False).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def open_lock_file(path: str, mode: int = 0o600) -> int:
    """Open (creating it) the lock file: never through a symlink, never blocking on a FIFO, a
    regular file only (else UnsafeFile naming what it is). OSError as open(2) raises it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    st_mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(st_mode):
        os.close(fd)
        raise UnsafeFile(path, f"is a {kind(st_mode)}, not a regular file")
    return fd


def flock_fd(fd: int, path: str, timeout: Optional[float] = None, cancelled: Optional[Callable[[], bool]] = None,
             shared: bool = False, poll: float = POLL) -> None:
    """Take the flock on the open `fd` (of `path`, for messages).

    timeout None and no `cancelled`: wait in the kernel until it is free. Otherwise poll: try at
    once, then every `poll` seconds; between tries, `cancelled()` True raises LockCancelled, and
    the deadline passed (timeout 0: after the first try) raises LockTimedOut. Any other failure
    of flock(2) is a FlockFailed. The fd stays open either way (the caller closes it).
    """
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if timeout is None and cancelled is None:
        try:
            fcntl.flock(fd, op)
        except OSError as exc:
            raise FlockFailed(exc.errno, exc.strerror, path) from exc
        return
    cancelled = cancelled or _never
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise FlockFailed(exc.errno, exc.strerror, path) from exc
        if cancelled():
            holder = read_holder(path)
            raise LockCancelled(path, holder, f"stopped while waiting for {holder or 'another process'} "
                                              f"to release {path}")
        if deadline is not None and time.monotonic() >= deadline:
            holder = read_holder(path)
            raise LockTimedOut(path, holder, f"{holder or 'another process'} has held {path} "
                                             f"for more than {timeout:g}s")
        time.sleep(poll)


# (path, thread) -> [fd, depth] of the re-entrant locks this process holds
_HELD: Dict[Tuple[str, int], List[int]] = {}


class FileLock:
    """`with FileLock(path, ...)`: the flock on `path`, released when the block ends.

    `timeout`/`cancelled`: as flock_fd (None and None: wait as long as it takes). `reentrant`: a
    thread that holds it already enters again at once (another thread or process still waits).
    `note`: written into the file once taken (the holder's pid by default), for read_holder.
    Errors: OSError opening it (UnsafeFile: not a regular file), FlockFailed, LockTimedOut,
    LockCancelled.
    """

    def __init__(self, path: str, timeout: Optional[float] = None, cancelled: Optional[Callable[[], bool]] = None,
                 *, reentrant: bool = False, note: Optional[str] = None, mode: int = 0o600, poll: float = POLL):
        self.path = path
        self.timeout = timeout
        self.cancelled = cancelled
        self.reentrant = reentrant
        self.note = note
        self.mode = mode
        self.poll = poll
        self._fd: Optional[int] = None
        self._nested = False

    def acquire(self) -> "FileLock":
        key = (self.path, threading.get_ident())
        if self.reentrant:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
                self._nested = True
                return self
        fd = open_lock_file(self.path, self.mode)
        try:
            flock_fd(fd, self.path, self.timeout, self.cancelled, poll=self.poll)
        except BaseException:
            os.close(fd)
            raise
        if self.note is not None:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, self.note.encode())
            except OSError:
                pass  # the note is a courtesy for the next waiter's message
        self._fd = fd
        if self.reentrant:
            _HELD[key] = [fd, 1]
        return self

    def release(self) -> None:
        key = (self.path, threading.get_ident())
        if self._nested:
            self._nested = False
            _HELD[key][1] -= 1
            return
        if self.reentrant:
            _HELD.pop(key, None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def pid_note() -> str:
    return f"pid {os.getpid()}\n"
