"""The apply lock under <root>/run and the outcome record under <root>/var/lib."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from sriov_node.errors import LockTimeout, StateError, describe_os_error
from sriov_node.files import STATE_LIMIT, UnsafeFile, kind, read_regular
from sriov_node.host import Host

LOCK_DIR = "run/sriov-node"
STATE_DIR = "var/lib/sriov-node"


def _never() -> bool:
    return False


# (lock path, thread) -> [fd, depth]: the lock is re-entrant within one thread, so a command that
# holds it across several steps (converge, then record a generation; edit, apply, restore) can call
# the engine, which takes it too. Another thread or process still waits on flock.
_HELD: Dict[Tuple[str, int], List[int]] = {}


class ApplyLock:
    """One run at a time, machine-wide: flock on <root>/run/sriov-node/apply.lock.

    The kernel drops the lock when the holder dies, so a killed run never wedges the next one.
    Re-entrant within a thread: an inner `with ApplyLock(...)` of the holder returns at once.
    """

    def __init__(self, host: Host, timeout: float, cancelled: Callable[[], bool] = _never):
        self.path = host.path(LOCK_DIR, "apply.lock")
        self.timeout = timeout
        self.cancelled = cancelled
        self._fd: Optional[int] = None
        self._nested = False

    def _open(self) -> int:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the lock directory {directory}: {describe_os_error(exc)}")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the apply lock {self.path}: {describe_os_error(exc)}")
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise StateError(f"the apply lock {self.path} is a {kind(mode)}, not a regular file; remove it")
        return fd

    def __enter__(self) -> "ApplyLock":
        held = _HELD.get((self.path, threading.get_ident()))
        if held is not None:
            held[1] += 1
            self._nested = True
            return self
        fd = self._open()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StateError(f"cannot lock {self.path}: {describe_os_error(exc)}")
                if self.cancelled():
                    holder = _read_quiet(self.path)
                    os.close(fd)
                    raise LockTimeout(f"stopped while waiting for another sriov-node run ({holder or 'unknown pid'}) "
                                      f"to release {self.path}; nothing was done")
                if time.monotonic() >= deadline:
                    holder = _read_quiet(self.path)
                    os.close(fd)
                    raise LockTimeout(
                        f"another sriov-node run ({holder or 'unknown pid'}) has held {self.path} "
                        f"for more than {self.timeout:g}s; wait for it or raise --timeout"
                    )
                time.sleep(0.05)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is a courtesy for the next waiter's message
        self._fd = fd
        _HELD[(self.path, threading.get_ident())] = [fd, 1]
        return self

    def __exit__(self, *exc: Any) -> None:
        key = (self.path, threading.get_ident())
        if self._nested:
            self._nested = False
            _HELD[key][1] -= 1
            return
        _HELD.pop(key, None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_quiet(path: str) -> str:
    """The lock holder's "pid N" line, for the next waiter's message ("" when it cannot be read)."""
    try:
        return read_regular(path, limit=4096, follow=False).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def state_path(host: Host) -> str:
    return host.path(STATE_DIR, "state.json")


def load_state(host: Host) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The last run's record and, when state.json exists but cannot be used, why (a sentence naming it).

    Read as every file of ours is (sriov_node.files): without blocking, a regular file only, never
    through a symlink, at most STATE_LIMIT bytes.
    """
    path = state_path(host)
    try:
        data = json.loads(read_regular(path, limit=STATE_LIMIT, follow=False).decode("utf-8"))
    except FileNotFoundError:
        return None, None
    except UnsafeFile as exc:
        return None, f"the state file {exc}; the last run is unknown"
    except OSError as exc:
        return None, f"the state file {path} cannot be read: {describe_os_error(exc)}; the last run is unknown"
    except ValueError:  # not UTF-8, not JSON
        return None, f"the state file {path} is not valid JSON; the last run is unknown (the next apply rewrites it)"
    if not isinstance(data, dict):
        return None, f"the state file {path} is not a JSON object; the last run is unknown (the next apply rewrites it)"
    return data, None


def read_state(host: Host) -> Optional[Dict[str, Any]]:
    """The last run's record, or None (absent or unusable: load_state says why)."""
    return load_state(host)[0]


def record_run(host: Host, run: Dict[str, Any], pfs: Dict[str, Dict[str, Any]], *, partial: bool) -> str:
    """Merge one run into state.json: a partial (per-PF) run keeps the other PFs' records."""
    previous = read_state(host) or {}
    merged: Dict[str, Any] = dict(previous.get("pfs") or {}) if partial else {}
    merged.update(pfs)
    record = dict(run)
    record["pfs"] = merged
    if partial and previous.get("result"):
        # the node-wide verdict stays that of the last full run, updated for the PFs just seen
        from sriov_node.engine.outcome import merged as merged_result

        record["result"] = merged_result((p.get("status") for p in merged.values()), run.get("result"))
    return write_state(host, record)


def write_state(host: Host, record: Dict[str, Any]) -> str:
    """Atomically replace <root>/var/lib/sriov-node/state.json (write, fsync, rename)."""
    from sriov_node.atomic import OutputError, write_atomic

    directory = host.path(STATE_DIR)
    path = os.path.join(directory, "state.json")
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the state directory {directory}: {describe_os_error(exc)}")
    try:
        write_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), mode=0o644,
                     follow=False)
    except OutputError as exc:
        raise StateError(f"the state file: {exc}")
    return path
