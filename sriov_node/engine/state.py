"""The apply lock under <root>/run and the outcome record under <root>/var/lib."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

from sriov_node.errors import LockTimeout, StateError, describe_os_error
from sriov_node.files import STATE_LIMIT, UnsafeFile, open_own_directory as own_directory, read_regular
from sriov_node.host import Host

LOCK_DIR = "run/sriov-node"
STATE_DIR = "var/lib/sriov-node"


def _never() -> bool:
    return False


class ApplyLock:
    """One run at a time, machine-wide: flock on <root>/run/sriov-node/apply.lock (sriov_node.locks).

    The kernel drops the lock when the holder dies, so a killed run never wedges the next one.
    Re-entrant within a thread: an inner `with ApplyLock(...)` of the holder returns at once (a
    command that holds it across several steps, converge then record a generation, or edit,
    apply, restore, calls the engine, which takes it too); another thread or process still waits.
    """

    def __init__(self, host: Host, timeout: float, cancelled: Callable[[], bool] = _never):
        from sriov_node.locks import FileLock

        self.path = host.path(LOCK_DIR, "apply.lock")
        self._host = host
        self.timeout = timeout
        self.cancelled = cancelled
        self._lock = FileLock(self.path, timeout, cancelled, reentrant=True, note=f"pid {os.getpid()}\n")

    def __enter__(self) -> "ApplyLock":
        from sriov_node.locks import FlockFailed, LockCancelled, LockTimedOut

        directory = os.path.dirname(self.path)
        try:
            os.close(own_directory(self._host.path("run"), "sriov-node", create=True))
        except UnsafeFile as exc:
            raise StateError(f"the lock directory {exc}")
        except OSError as exc:
            raise StateError(f"cannot create the lock directory {directory}: {describe_os_error(exc)}")
        try:
            self._lock.acquire()
        except LockCancelled as exc:
            raise LockTimeout(f"stopped while waiting for another sriov-node run ({exc.holder or 'unknown pid'}) "
                              f"to release {self.path}; nothing was done")
        except LockTimedOut as exc:
            raise LockTimeout(f"another sriov-node run ({exc.holder or 'unknown pid'}) has held {self.path} "
                              f"for more than {self.timeout:g}s; wait for it or raise --timeout")
        except UnsafeFile as exc:
            raise StateError(f"the apply lock {self.path} {exc.reason}; remove it")
        except FlockFailed as exc:
            raise StateError(f"cannot lock {self.path}: {describe_os_error(exc)}")
        except OSError as exc:
            raise StateError(f"cannot open the apply lock {self.path}: {describe_os_error(exc)}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


def _read_quiet(path: str) -> str:
    """The lock holder's "pid N" line, for the next waiter's message ("" when it cannot be read)."""
    from sriov_node.locks import read_holder

    return read_holder(path)


def state_path(host: Host) -> str:
    return host.path(STATE_DIR, "state.json")


def load_state(host: Host) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The last run's record and, when state.json exists but cannot be used, why (a sentence naming it).

    Read as every file of ours is (sriov_node.files): without blocking, a regular file only, never
    through a symlink, at most STATE_LIMIT bytes.
    """
    path = state_path(host)
    try:
        fd = own_directory(host.path("var/lib"), "sriov-node")  # a symlink in its place is not followed
        try:
            data = json.loads(read_regular(path, limit=STATE_LIMIT, follow=False, dir_fd=fd).decode("utf-8"))
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None, None
    except UnsafeFile as exc:
        if exc.path != path:
            return None, f"the state directory {exc}; the last run is unknown"
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
    from sriov_node.atomic import OutputError, replace_at

    directory = host.path(STATE_DIR)
    path = os.path.join(directory, "state.json")
    try:
        fd = own_directory(host.path("var/lib"), "sriov-node", create=True)  # never through a symlink
    except UnsafeFile as exc:
        raise StateError(f"the state directory {exc}")
    except OSError as exc:
        raise StateError(f"cannot create the state directory {directory}: {describe_os_error(exc)}")
    try:
        replace_at(fd, path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), mode=0o644)
    except OutputError as exc:
        raise StateError(f"the state file: {exc}")
    finally:
        os.close(fd)
    return path
