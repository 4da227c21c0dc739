"""Replace a file atomically: a reader sees the old bytes or the new ones, never a part."""

from __future__ import annotations

import os
import stat
from typing import Optional

from sriov_node.errors import EXIT_PF_FAILED, SriovNodeError, describe_os_error


class OutputError(SriovNodeError):
    """A file sriov-node was asked to write (an export, a capture, metrics, the config) cannot be written."""

    exit_code = EXIT_PF_FAILED


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, mode: Optional[int] = None, backup: Optional[bytes] = None,
                 owner: Optional[tuple] = None) -> Optional[str]:
    """Write `data` to a hidden temporary file beside `path`, fsync, rename over `path`.

    mode: the new file's permissions (default: the old file's, else 0644); owner: (uid, gid) to
    give it (when permitted). backup: bytes to keep as `path`.bak first (the previous version),
    written the same way. Returns the backup's path, if one was written. Raises OutputError.
    """
    try:  # stat what `path` names: /dev/stdout -> /proc/self/fd/1 -> "pipe:[N]", which is no path
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    if not special:
        path = os.path.realpath(path)  # a symlink stays a symlink: the file it names is replaced
    if special:  # a device or a FIFO (/dev/stdout, a pipe): written through, never renamed over
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")
        return None
    directory = os.path.dirname(path) or "."
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o644
    backup_path = None
    if backup is not None:
        backup_path = path + ".bak"
        _replace(backup_path, directory, backup, mode, owner)
    _replace(path, directory, data, mode, owner)
    _fsync_dir(directory)
    return backup_path


def _create_beside(directory: str, stem: str) -> "tuple[int, str]":
    for n in range(100):
        tmp = os.path.join(directory, f"{stem}.{n}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue  # left by a writer that died: try the next name
    raise OSError(17, "no free temporary name")


def _replace(path: str, directory: str, data: bytes, mode: int, owner: Optional[tuple]) -> None:
    # The temporary name is hidden and does not end like the target (node_exporter reads only *.prom).
    # (Made here rather than by tempfile, whose import costs every start-up a few milliseconds.)
    try:
        fd, tmp = _create_beside(directory, f".{os.path.basename(path)}.{os.getpid()}")
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
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}")
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
