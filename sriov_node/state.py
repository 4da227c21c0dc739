"""The apply lock under <root>/run and the outcome record under <root>/var/lib."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from typing import Any, Dict, Optional

from sriov_node.errors import LockTimeout, StateError
from sriov_node.host import Host

LOCK_DIR = "run/sriov-node"
STATE_DIR = "var/lib/sriov-node"


class ApplyLock:
    """One apply at a time, machine-wide: flock on <root>/run/sriov-node/apply.lock.

    The kernel drops the lock when the holder dies, so a killed apply never wedges the next one.
    """

    def __init__(self, host: Host, timeout: float):
        self.path = host.path(LOCK_DIR, "apply.lock")
        self.timeout = timeout
        self._fd: Optional[int] = None

    def __enter__(self) -> "ApplyLock":
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot create the apply lock {self.path}: {exc.strerror}; run sriov-node as root")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_quiet(self.path)
                    os.close(fd)
                    raise LockTimeout(
                        f"another sriov-node apply ({holder or 'unknown pid'}) has held {self.path} "
                        f"for more than {self.timeout:g}s; wait for it or raise --timeout"
                    )
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_quiet(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def write_state(host: Host, record: Dict[str, Any]) -> str:
    """Atomically replace <root>/var/lib/sriov-node/state.json (write, fsync, rename)."""
    directory = host.path(STATE_DIR)
    path = os.path.join(directory, "state.json")
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=directory)
    except OSError as exc:
        raise StateError(f"cannot write the state file {path}: {exc.strerror}")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_state(host: Host) -> Optional[Dict[str, Any]]:
    try:
        with open(host.path(STATE_DIR, "state.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
