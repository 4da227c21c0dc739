"""sd_notify and logging without systemd-python (a plain `pip install`, no extras): the daemon speaks the
notify protocol over $NOTIFY_SOCKET itself and logs to stderr, which journald records.

Each test runs the installed console script with a real AF_UNIX datagram socket as NOTIFY_SOCKET and a
`systemd` package on PYTHONPATH that cannot be imported, as on a host where systemd-python was never built.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from typing import List

import pytest

from tests.helpers import CLI, PF0

CONFIG = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'


def no_systemd_python(tmp_path) -> str:
    shadow = tmp_path / "shadow"
    (shadow / "systemd").mkdir(parents=True)
    (shadow / "systemd" / "__init__.py").write_text("raise ImportError('systemd-python is not installed')\n")
    return str(shadow)


def receive_until(sock: socket.socket, text: str, messages: List[str], proc: subprocess.Popen) -> None:
    """Read datagrams until one holds `text` (each recv is one sd_notify message); 60 s at most, as
    WATCHDOG=1 keeps coming every 0.1 s from a daemon that never sends the awaited one."""
    deadline = time.monotonic() + 60
    while not any(text in m for m in messages):
        assert time.monotonic() < deadline, f"no {text} in 60 s; got the last of {len(messages)}: {messages[-5:]}"
        try:
            messages.append(sock.recv(4096).decode())
        except socket.timeout:
            assert proc.poll() is None, f"the daemon exited {proc.returncode} before {text}; got {messages}"


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_the_daemon_notifies_over_the_socket_without_systemd_python(make_host, write_config, tmp_path, kind):
    host = make_host()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        address = env_value = str(tmp_path / "notify.sock")
    else:
        name = f"sriov-node-test/{uuid.uuid4().hex}"
        address, env_value = "\0" + name, "@" + name
    sock.bind(address)
    sock.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOV_NODE_", "JOURNAL_STREAM", "INVOCATION_ID"))}
    env.update(NOTIFY_SOCKET=env_value, WATCHDOG_USEC="200000", PYTHONPATH=no_systemd_python(tmp_path))
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        proc = subprocess.Popen([CLI, "--root", host.root, "--config", write_config(CONFIG), "daemon"],
                                stdout=subprocess.DEVNULL, stderr=err, env=env)
    messages: List[str] = []
    try:
        receive_until(sock, "READY=1", messages, proc)
        ready = next(m for m in messages if "READY=1" in m)
        assert ready.splitlines() == ["READY=1", "STATUS=1 of 1 PF(s) converged (generation 1)"]  # one datagram, both lines
        assert host.sysfs.num_vfs(PF0) == 2  # READY=1 after the converge, read back
        receive_until(sock, "WATCHDOG=1", messages, proc)  # WATCHDOG_USEC: fed every 0.1 s while idle
        proc.send_signal(signal.SIGTERM)
        receive_until(sock, "STOPPING=1", messages, proc)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    text = log.read_text()
    assert "systemd-python" not in text and "Traceback" not in text
    assert "sriov-node: ready: 1 of 1 PF(s) converged" in text  # the log on stderr, for journald


def test_stderr_that_is_the_journal_stream_carries_priorities(make_host, write_config, tmp_path):
    """Under systemd (JOURNAL_STREAM names stderr) each line starts with its syslog priority, as journald reads it."""
    host = make_host()
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        st = os.fstat(err.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOV_NODE_", "NOTIFY_SOCKET"))}
        env.update(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}", PYTHONPATH=no_systemd_python(tmp_path))
        proc = subprocess.run([CLI, "--root", host.root, "--config", write_config(CONFIG + 'bogus = 1\n'), "boot"],
                              stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=60)
    lines = [line for line in log.read_text().splitlines() if line]
    assert proc.returncode == 2 and lines
    assert all(line[:3] in ("<2>", "<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert any(line.startswith("<3>") and "bogus" in line for line in lines), lines


def test_a_notify_socket_that_is_not_unix_is_refused_with_the_way_out(make_host, write_config, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    env.update(NOTIFY_SOCKET="vsock:2:1234", PYTHONPATH=no_systemd_python(tmp_path))
    proc = subprocess.run([CLI, "--root", make_host().root, "--config", write_config(CONFIG), "daemon"],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 1 and "NOTIFY_SOCKET='vsock:2:1234'" in proc.stderr and "--no-notify" in proc.stderr
