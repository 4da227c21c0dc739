"""Reading the agent's own files (config, state, generations) so that no file can hang or flood it.

Every such file is opened with O_NONBLOCK (a FIFO in its place answers at once instead of
blocking `open()` until a writer comes), checked with fstat to be a regular file, and read with a
size cap (`/dev/zero` or a runaway file stops at the cap). `follow=False` adds O_NOFOLLOW for the
files we also write, so a symlink planted there is refused rather than followed;
`check_replaceable` says the same of such a file before a writer renames a new version over it.

The agent's own directories (`var/lib/sriov-node`, its `generations/`, `run/sriov-node`) are
opened with `open_own_directory`: a symlink or anything but a directory there is refused by
name, never followed, and the files in them are read, written and removed through that fd
(`dir_fd=`). The config's directory is held to `directory_trust`: owned by root (or, for a
writer that is not root, by itself) and writable by nobody else, since whoever can write there
can put a symlink in the config's place.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterable, Optional

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


def open_regular(path: str, *, follow: bool = True, flags: int = os.O_RDONLY, dir_fd: Optional[int] = None) -> int:
    """An fd on `path` once it is known to be a regular file (never blocks on a FIFO).

    The path is looked at (stat, or lstat without `follow`) before it is opened, so that a device
    or a FIFO is refused without being opened at all; the open itself is O_NONBLOCK and checked
    again with fstat, for whatever replaced the file in between. With `dir_fd` (an fd from
    open_own_directory), the file is `path`'s last component in that directory (`path` names it
    in messages).
    """
    name = path if dir_fd is None else os.path.basename(path)
    try:
        _refuse_special(path, os.stat(name, dir_fd=dir_fd, follow_symlinks=follow).st_mode)
    except UnsafeFile:
        raise
    except OSError:
        pass  # absent, or not searchable: the open below says so
    extra = os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(name, flags | extra, dir_fd=dir_fd)
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


def read_regular(path: str, *, limit: int, follow: bool = True, dir_fd: Optional[int] = None) -> bytes:
    """The bytes of the regular file `path`, refused (UnsafeFile) beyond `limit` bytes."""
    fd = open_regular(path, follow=follow, dir_fd=dir_fd)
    try:
        return read_fd(fd, path, limit)
    finally:
        os.close(fd)


def check_replaceable(path: str, *, dir_fd: Optional[int] = None) -> Optional[os.stat_result]:
    """Before replacing one of our own files by a rename: refuse a symlink or a non-regular file in its place.

    (A rename would replace a symlink itself, not follow it; refusing says what was found, as the
    readers do, instead of silently dropping what someone put there.) The file's lstat, or None
    when there is none.
    """
    try:
        st = os.stat(path if dir_fd is None else os.path.basename(path), dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    _refuse_special(path, st.st_mode)
    return st


_OWN_DIRECTORY_FIX = "the agent's own directories are never followed; remove it (sriov-node makes the directory)"


def open_own_directory(base: str, *names: str, create: bool = False) -> int:
    """An fd on the directory `base`/`names...`, each of `names` opened without following a symlink.

    `base` (`<root>/var/lib`, `<root>/run`) is the system's and may be reached through symlinks;
    each of `names` is the agent's own directory: a symlink there, or anything but a directory,
    is an UnsafeFile naming it, never followed (for reads, records and pruning alike). With
    `create`, what is missing is made (mode 0755). FileNotFoundError when absent without `create`.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if create:
        os.makedirs(base, mode=0o755, exist_ok=True)
    fd = os.open(base, flags)
    path = base
    try:
        for name in names:
            path = os.path.join(path, name)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: judged below
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeFile(path, f"is a symbolic link; refused ({_OWN_DIRECTORY_FIX})", errno.ELOOP)
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeFile(path, f"is a {kind(st.st_mode)}, not a directory; refused (remove it: sriov-node "
                                       "makes the directory)", errno.ENOTDIR)
            try:
                inner = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced between the look and the open
                    raise UnsafeFile(path, f"is not a directory (a symbolic link?); refused ({_OWN_DIRECTORY_FIX})",
                                     exc.errno)
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def directory_trust(directory: str, st: os.stat_result, owners: Iterable[int] = (0,),
                    entry_uid: Optional[int] = None) -> Optional[str]:
    """Why the config's directory cannot be trusted (a sentence naming it and the fix), or None.

    Whoever can write to the directory can replace the config with a symlink to any file, which a
    root writer (rollback, checkpoint expiry, `set`) would then overwrite: the directory must be
    owned by root (or one of `owners`) and writable by nobody else, like the file itself. A
    sticky directory (/tmp: mode 1777) is trusted for an entry a trusted owner owns (`entry_uid`):
    there nobody else may remove or rename it, so nobody can put a symlink in its place.
    """
    owners = tuple(owners)
    fix = f"run: chmod go-w {directory}; chown root {directory}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{directory}: the config's directory is a {kind(st.st_mode)}, not a directory"
    if st.st_uid not in owners:
        return (f"{directory}: the config's directory is owned by uid {st.st_uid}, not root, so its owner could "
                f"put a symlink in the config's place; {fix}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (st.st_mode & stat.S_ISVTX and entry_uid in owners):
        return (f"{directory}: the config's directory is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}), so anyone could put a symlink in the config's place; {fix}")
    return None


def config_directories(path: str) -> "list[str]":
    """The directories a config path depends on: where the path is, and where its real file is (a symlink's target)."""
    given = os.path.dirname(os.path.abspath(path))
    real = os.path.dirname(os.path.realpath(path))
    return [given] if given == real else [given, real]


def config_directory_problem(path: str, owners: Iterable[int] = (0,)) -> Optional[str]:
    """directory_trust of each directory the config `path` depends on; a directory not made yet is
    judged by its nearest existing parent (where it would be made)."""
    for directory in config_directories(path):
        while True:
            try:
                st = os.stat(directory)
                break
            except FileNotFoundError:
                parent = os.path.dirname(directory)
                if parent == directory:
                    st = None
                    break
                directory = parent
            except OSError:
                st = None
                break
        try:
            entry = os.lstat(os.path.join(directory, os.path.basename(path) if directory == os.path.dirname(
                os.path.abspath(path)) else os.path.basename(os.path.realpath(path))))
            entry_uid: Optional[int] = entry.st_uid
        except OSError:
            entry_uid = None
        why = directory_trust(directory, st, owners, entry_uid) if st is not None else None
        if why:
            return why
    return None


def writer_owners() -> "tuple[int, ...]":
    """Who may own the config's directory for this process to write the config: root, and the writer itself."""
    return tuple(sorted({0, os.geteuid()}))
