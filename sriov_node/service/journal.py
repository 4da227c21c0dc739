"""Talking to systemd: sd_notify and the journal.

systemd-python is an optional extra (it has no wheel: it needs a compiler and libsystemd's headers).
With it, log records go to the journal with their fields (SRIOV_PF=, ...) and sd_notify is its
daemon.notify. Without it, the notify protocol is spoken here (one datagram per message to
$NOTIFY_SOCKET: a path, or '@' for the abstract namespace) and records go to stderr, which
journald records for a service (with a `<N>` priority prefix when stderr is that journal stream).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any, Callable, Dict, Optional

LOGGER = "sriov-node"


def under_systemd() -> bool:
    """stdout/stderr go to the journal (systemd sets JOURNAL_STREAM for a service's streams)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


def stderr_is_journal() -> bool:
    """stderr is connected to the journal (JOURNAL_STREAM names its device and inode)."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(2)
        return bool(dev and ino) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def _priority(levelno: int) -> int:
    """syslog priority of a logging level, as systemd-python's JournalHandler maps it."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class _PlainFormatter(logging.Formatter):
    def __init__(self, prefix_priority: bool = False):
        super().__init__()
        self.prefix_priority = prefix_priority  # journald reads "<3>..." on a stream as PRIORITY=3

    def format(self, record: logging.LogRecord) -> str:
        where = " ".join(f"{k[6:].lower()}={v}" for k, v in sorted(record.__dict__.items())
                         if k.startswith("SRIOV_") and v is not None)
        text = f"sriov-node: {record.getMessage()}" + (f" [{where}]" if where else "")
        if self.prefix_priority:
            prefix = f"<{_priority(record.levelno)}>"
            text = prefix + text.replace("\n", "\n" + prefix)
        return text


def setup_logging(verbose: bool = False) -> logging.Logger:
    """The journal, with structured fields (SRIOV_PF=, SRIOV_VF=, SRIOV_ACTION=, PRIORITY), when
    running under systemd and systemd-python is there; plain lines on stderr otherwise."""
    log = logging.getLogger(LOGGER)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler: Optional[logging.Handler] = None
    if under_systemd():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="sriov-node")
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter(prefix_priority=stderr_is_journal()))
    log.addHandler(handler)
    return log


def fields(pf: Optional[str] = None, vf: Optional[int] = None, action: Optional[str] = None) -> Dict[str, Any]:
    """Structured journal fields for logging's `extra=`."""
    out: Dict[str, Any] = {}
    if pf is not None:
        out["SRIOV_PF"] = pf
    if vf is not None:
        out["SRIOV_VF"] = str(vf)
    if action is not None:
        out["SRIOV_ACTION"] = action
    return out


def notify_address(value: str) -> Optional[str]:
    """The socket address of $NOTIFY_SOCKET: a path, or '@name' for the abstract namespace (NUL-led)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: (a VM's manager) is not for a node agent


class _SocketNotify:
    """sd_notify(3) without libsystemd: each message one datagram on an AF_UNIX socket."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def __call__(self, message: str) -> bool:
        try:
            self.sock.sendto(message.encode(), self.address)
            return True
        except OSError:  # as sd_notify: the manager gone (or not listening) is not the daemon's failure
            return False


class Notifier:
    """sd_notify through systemd-python when it is installed, else over $NOTIFY_SOCKET directly;
    silent when there is no NOTIFY_SOCKET (not a Type=notify unit)."""

    def __init__(self, enabled: bool = True):
        socket_env = os.environ.get("NOTIFY_SOCKET", "")
        self.enabled = enabled and bool(socket_env)
        self._notify: Optional[Callable[[str], Any]] = None
        if self.enabled:
            try:
                from systemd import daemon

                self._notify = daemon.notify
            except ImportError:
                address = notify_address(socket_env)
                if address is None:
                    raise RuntimeError(f"NOTIFY_SOCKET={socket_env!r} is neither a path nor an abstract ('@') "
                                       "socket; run `sriov-node daemon --no-notify` outside systemd")
                self._notify = _SocketNotify(address)
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval = int(usec) / 2e6 if self.enabled and usec and usec.isdigit() else None

    def send(self, *lines: str) -> None:
        if self._notify is not None:
            self._notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
