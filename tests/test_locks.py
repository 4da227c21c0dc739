"""sriov_node.locks: the one flock helper (the apply lock and the simulated kernel's model lock use it)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from sriov_node.engine.state import ApplyLock
from sriov_node.errors import LockTimeout
from sriov_node.files import UnsafeFile
from sriov_node.locks import FileLock, LockCancelled, LockTimedOut, read_holder

# Another process takes the lock, says so on stdout, holds it until its stdin closes.
HOLDER = """
import sys
from sriov_node.locks import FileLock
with FileLock(sys.argv[1], note="pid held-by-test\\n"):
    print("held", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock on tmp_path/x.lock (started, and waited for, by its 'held' line)."""
    path = str(tmp_path / "x.lock")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "held\n"
    yield path, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_another_process_holding_it_makes_a_single_try_fail_naming_the_holder(holder):
    path, _ = holder
    with pytest.raises(LockTimedOut) as info:
        FileLock(path, timeout=0).acquire()
    assert info.value.holder == "pid held-by-test"
    assert str(info.value) == f"pid held-by-test has held {path} for more than 0s"


def test_a_waiter_gets_it_once_the_holder_lets_go(holder):
    path, proc = holder
    taken = threading.Event()

    def wait_for_it():
        with FileLock(path):  # no deadline: waits in the kernel
            taken.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not taken.is_set()
    proc.stdin.close()  # the holder releases
    assert proc.stdout.readline() == "released\n"
    waiter.join(60)
    assert taken.is_set()


def test_a_killed_holder_leaves_it_free(holder):
    path, proc = holder
    proc.kill()
    proc.wait()
    with FileLock(path, timeout=0):  # the kernel dropped the dead holder's lock
        pass


def test_the_deadline_ends_the_wait_with_a_clear_error(holder):
    path, _ = holder
    tries = []

    def count() -> bool:
        tries.append(1)
        return False

    with pytest.raises(LockTimedOut, match=f"pid held-by-test has held {path} for more than 0.2s"):
        FileLock(path, timeout=0.2, cancelled=count, poll=0.01).acquire()
    assert len(tries) >= 2  # it polled: a try, then more until the deadline


def test_cancellation_stops_the_wait_between_tries(holder):
    path, _ = holder
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(LockCancelled, match=f"stopped while waiting for pid held-by-test to release {path}"):
        FileLock(path, timeout=None, cancelled=cancelled, poll=0.001).acquire()
    assert len(asked) == 3  # asked between tries, stopped the moment it said so


def test_reentrant_within_a_thread_only(tmp_path):
    path = str(tmp_path / "x.lock")
    other = []

    def from_another_thread():
        try:
            FileLock(path, timeout=0, reentrant=True).acquire()
        except LockTimedOut as exc:
            other.append(exc)

    with FileLock(path, timeout=0, reentrant=True, note="pid me\n"):
        with FileLock(path, timeout=0, reentrant=True):  # the holder enters again at once
            pass
        with FileLock(path, timeout=0, reentrant=True):  # still held after the inner one left
            t = threading.Thread(target=from_another_thread)
            t.start()
            t.join(60)
        assert len(other) == 1 and other[0].holder == "pid me"
        assert read_holder(path) == "pid me"
    with FileLock(path, timeout=0):  # released once the outermost one left
        pass


def test_a_lock_path_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = str(tmp_path / "x.lock")
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="is a FIFO, not a regular file"):
        FileLock(fifo, timeout=0).acquire()
    link = str(tmp_path / "y.lock")
    os.symlink(str(tmp_path / "elsewhere"), link)
    with pytest.raises(OSError):
        FileLock(link, timeout=0).acquire()  # never through a symlink
    assert not os.path.exists(tmp_path / "elsewhere")


def test_the_apply_lock_keeps_its_messages(make_host):
    """ApplyLock on the helper: the holder's pid and the --timeout hint, cancellation's 'nothing was done'."""
    host = make_host()
    path = host.path("run/sriov-node", "apply.lock")
    os.makedirs(os.path.dirname(path))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        with pytest.raises(LockTimeout) as info:
            ApplyLock(host, 0.0).__enter__()
        assert str(info.value) == (f"another sriov-node run (pid held-by-test) has held {path} for more than 0s; "
                                   "wait for it or raise --timeout")
        with pytest.raises(LockTimeout) as info:
            ApplyLock(host, 30, lambda: True).__enter__()
        assert str(info.value) == (f"stopped while waiting for another sriov-node run (pid held-by-test) to release "
                                   f"{path}; nothing was done")
    finally:
        proc.kill()
        proc.wait()
    with ApplyLock(host, 0.0):
        assert read_holder(path) == f"pid {os.getpid()}"
