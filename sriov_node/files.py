"""Reading the agent's own files (config, state, generations) so that no file can hang or flood it.

Every such file is opened with O_NONBLOCK (a FIFO in its place answers at once instead of
blocking `open()` until a writer comes), checked with fstat to be a regular file, and read with a
size cap (`/dev/zero` or a runaway file stops at the cap). `follow=False` adds O_NOFOLLOW for the
files we also write, so a symlink planted there is refused rather than followed;
`check_replaceable` says the same of such a file before a writer renames a new version over it.
"""

from __future__ import annotations

import errno
import os
import stat

CONFIG_LIMIT = 1 << 20  # a config of 1 MiB is already absurd
STATE_LIMIT = 8 << 20  # state and generation records: thousands of VFs fit far below this


class UnsafeFile(OSError):
    """A file that is not a regular file, or larger than we read; `str()` names the path and why."""

    def __init__(self, path: str, reason: str, code: int = errno.EINVAL):
        super().__init__(code, reason, path)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def kind(mode: int) -> str:
    """What a non-regular file is, in words ('FIFO', 'directory', ...)."""
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


def _refuse_special(path: str, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise UnsafeFile(path, "is a symbolic link; refused (replace it with a regular file)", errno.ELOOP)
    if not stat.S_ISREG(mode):
        raise UnsafeFile(path, f"is a {kind(mode)}, not a regular file; replace it with a regular file")


def open_regular(path: str, *, follow: bool = True, flags: int = os.O_RDONLY) -> int:
    """An fd on `path` once it is known to be a regular file (never blocks on a FIFO).

    The path is looked at (stat, or lstat without `follow`) before it is opened, so that a device
    or a FIFO is refused without being opened at all; the open itself is O_NONBLOCK and checked
    again with fstat, for whatever replaced the file in between.
    """
    try:
        _refuse_special(path, (os.stat if follow else os.lstat)(path).st_mode)
    except UnsafeFile:
        raise
    except OSError:
        pass  # absent, or not searchable: the open below says so
    extra = os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags | extra)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise UnsafeFile(path, "is a symbolic link; refused (replace it with a regular file)", errno.ELOOP)
        raise
    try:
        _refuse_special(path, os.fstat(fd).st_mode)
        # back to blocking reads: O_NONBLOCK was only there so that open() itself cannot hang
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(fd: int, path: str, limit: int) -> bytes:
    """The bytes behind `fd` (from open_regular), refused (UnsafeFile) beyond `limit` bytes."""
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 16, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise UnsafeFile(path, f"is larger than {limit} bytes; refused (is it the right file?)", errno.EFBIG)
    return b"".join(chunks)


def read_regular(path: str, *, limit: int, follow: bool = True) -> bytes:
    """The bytes of the regular file `path`, refused (UnsafeFile) beyond `limit` bytes."""
    fd = open_regular(path, follow=follow)
    try:
        return read_fd(fd, path, limit)
    finally:
        os.close(fd)


def check_replaceable(path: str) -> None:
    """Before replacing one of our own files by a rename: refuse a symlink or a non-regular file in its place.

    (A rename would replace a symlink itself, not follow it; refusing says what was found, as the
    readers do, instead of silently dropping what someone put there.)
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    _refuse_special(path, mode)
