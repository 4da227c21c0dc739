"""Replace a file atomically: a reader sees the old bytes or the new ones, never a part."""

from __future__ import annotations

import errno
import os
import re
import stat
from typing import Iterable, Optional

from sriov_node.errors import EXIT_PF_FAILED, SriovNodeError, describe_os_error
from sriov_node.files import UnsafeFile


class OutputError(SriovNodeError):
    """A file sriov-node was asked to write (an export, a capture, metrics, the config) cannot be written."""

    exit_code = EXIT_PF_FAILED


def write_atomic(path: str, data: bytes, *, mode: Optional[int] = None, backup: Optional[bytes] = None,
                 owner: Optional[tuple] = None, follow: bool = True) -> Optional[str]:
    """Write `data` to a hidden temporary file beside `path`, fsync, rename over `path`.

    mode: the new file's permissions (default: the old file's, else 0644); owner: (uid, gid) to
    give it (when permitted). backup: bytes to keep as `path`.bak first (the previous version),
    written the same way. Returns the backup's path, if one was written. Raises OutputError.

    follow: a file the user names (an export, a capture, metrics) is written where a symlink at
    `path` points, and a device or FIFO there is written through (`-o /dev/stdout`; a FIFO
    without a reader is refused, never waited for). With follow=False (the agent's own files:
    state.json), a symlink or anything but a regular file at `path` is refused
    (files.check_replaceable). Either way the directory is opened once (O_NOFOLLOW) and the
    temporary file is made and renamed through that fd (`replace_at`): a symlink put at the final
    or the temporary name meanwhile is never followed. The config itself goes through
    `write_config`.
    """
    if follow:
        try:  # the kernel resolves the path: /dev/stdout -> /proc/self/fd/1 -> a pipe (realpath cannot)
            special = not stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            special = False
        if special:  # a device or a FIFO (/dev/stdout, a pipe): written through, never renamed over
            _write_through(path, data)
            return None
        path = os.path.realpath(path)  # a symlink stays a symlink: the file it names is replaced
    dir_fd = open_directory(path)
    try:
        if mode is None:
            st = _look(dir_fd, path)
            mode = st.st_mode & 0o7777 if st is not None else 0o644
        return replace_at(dir_fd, path, data, mode=mode, owner=owner, backup=backup)
    finally:
        os.close(dir_fd)


def open_directory(path: str) -> int:
    """An fd on the directory holding `path` (O_NOFOLLOW: a symlink in the directory's place is refused)."""
    directory = os.path.dirname(path) or "."
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(directory):
            raise OutputError(f"cannot write {path}: its directory {directory} is a symbolic link; refused")
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")


def _look(dir_fd: int, path: str) -> Optional[os.stat_result]:
    """The lstat of `path`'s name in `dir_fd`; a symlink or a non-regular file there is an OutputError."""
    from sriov_node.files import check_replaceable

    try:
        return check_replaceable(path, dir_fd=dir_fd)
    except UnsafeFile as exc:
        raise OutputError(f"cannot write {exc}")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")


def replace_at(dir_fd: int, path: str, data: bytes, *, mode: int, owner: Optional[tuple] = None,
               backup: Optional[bytes] = None) -> Optional[str]:
    """Replace `path`'s last component in the directory `dir_fd` by `data` (temp file, fsync, rename, fsync
    the directory), never following a symlink: one at the final name is refused, the temporary name is
    made O_EXCL|O_NOFOLLOW. Temporary files a killed writer of the same name left are removed first.
    `backup`: the previous bytes, kept as `path`.bak. The backup's path, if one was written."""
    _look(dir_fd, path)
    backup_path = None
    if backup is not None:
        backup_path = path + ".bak"
        _look(dir_fd, backup_path)
        _replace(dir_fd, backup_path, backup, mode, owner)
    _replace(dir_fd, path, data, mode, owner)
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    return backup_path


def write_config(path: str, data: bytes, *, backup: Optional[bytes] = None, owner: Optional[tuple] = None,
                 owners: Optional[Iterable[int]] = None) -> "tuple[Optional[str], Optional[str]]":
    """Replace the config file at `path` as a root daemon must: (the backup's path, a notice or None).

    The config may be a symlink (a file managed elsewhere, linked into /etc): the file it names is
    replaced and the link stays. Every directory involved (the link's, the file's) must be owned
    by root (or the writer, `owners`) and writable by nobody else (files.directory_trust),
    checked before anything is written and again on the directory fd the file is replaced
    through; a symlink at the final name that was not there when the path was resolved, or
    anything but a regular file, is refused. The file keeps its mode without group or other
    write and execute bits (0644 for a new file; a 0666 file becomes 0644, and the notice says so).
    Raises OutputError naming the file or the directory and the fix; nothing is written then.
    """
    from sriov_node.files import config_directory_problem, directory_trust, writer_owners

    owners = tuple(writer_owners() if owners is None else owners)
    why = config_directory_problem(path, owners)
    if why:
        raise OutputError(f"cannot write {path}: {why}; nothing was written")
    real = os.path.realpath(path)
    dir_fd = open_directory(real)
    try:
        try:
            entry_uid: Optional[int] = os.stat(os.path.basename(real), dir_fd=dir_fd, follow_symlinks=False).st_uid
        except OSError:
            entry_uid = None
        why = directory_trust(os.path.dirname(real), os.fstat(dir_fd), owners, entry_uid)
        if why:
            raise OutputError(f"cannot write {path}: {why}; nothing was written")
        st = _look(dir_fd, real)
        notice = None
        mode = CONFIG_MODE
        if st is not None:
            mode = st.st_mode & CONFIG_MODE
            if mode != st.st_mode & 0o7777:
                notice = (f"{real} had mode {st.st_mode & 0o7777:04o}; written with mode {mode:04o} (a root "
                          "daemon's config is writable by root only)")
        return replace_at(dir_fd, real, data, mode=mode, owner=owner, backup=backup), notice
    finally:
        os.close(dir_fd)


CONFIG_MODE = 0o644  # the widest mode a written config keeps


def _write_through(path: str, data: bytes) -> None:
    """Write into a device or a FIFO (opened O_NONBLOCK: a FIFO nobody reads is refused, not waited on)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputError(f"cannot write {path}: it is a FIFO that nothing reads; start its reader, or "
                              "name a regular file")
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")
    try:
        os.set_blocking(fd, True)  # a reader is there: let it take its time
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")
    finally:
        os.close(fd)


_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<n>\d+)\.tmp\Z")


def _pid_dead(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive (EPERM: someone else's)
    return False


def _clean_stale(dir_fd: int, name: str) -> None:
    """Remove the temporary files of `name` (`.NAME.PID.N.tmp`) whose writer is dead (killed mid-write)."""
    try:
        entries = os.listdir(dir_fd)
    except OSError:
        return
    for entry in entries:
        m = _TEMP_RE.match(entry)
        if m is None or m.group("name") != name or not _pid_dead(int(m.group("pid"))):
            continue
        try:
            os.unlink(entry, dir_fd=dir_fd)  # a symlink is removed, never followed
        except OSError:
            pass


def _create_beside(dir_fd: int, stem: str) -> "tuple[int, str]":
    for n in range(100):
        tmp = f"{stem}.{n}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=dir_fd), tmp
        except FileExistsError:
            continue  # a live writer's, or something put there: try the next name
    raise OSError(17, "no free temporary name")


def _replace(dir_fd: int, path: str, data: bytes, mode: int, owner: Optional[tuple]) -> None:
    # The temporary name is hidden and does not end like the target (node_exporter reads only *.prom).
    # (Made here rather than by tempfile, whose import costs every start-up a few milliseconds.)
    name = os.path.basename(path)
    _clean_stale(dir_fd, name)
    try:
        fd, tmp = _create_beside(dir_fd, f".{name}.{os.getpid()}")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fh.fileno(), owner[0], owner[1])
                except PermissionError:
                    pass  # not root: the file stays ours, as any file we write
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
