"""Talking to systemd: sd_notify and the journal (systemd-python), or stderr when not under systemd."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, Optional

LOGGER = "sriov-node"


def under_systemd() -> bool:
    """stdout/stderr go to the journal (systemd sets JOURNAL_STREAM for a service's streams)."""
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        where = " ".join(f"{k[6:].lower()}={v}" for k, v in sorted(record.__dict__.items())
                         if k.startswith("SRIOV_") and v is not None)
        return f"sriov-node: {record.getMessage()}" + (f" [{where}]" if where else "")


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
        handler.setFormatter(_PlainFormatter())
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


class Notifier:
    """sd_notify through systemd-python; silent when there is no NOTIFY_SOCKET (not a Type=notify unit)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and bool(os.environ.get("NOTIFY_SOCKET"))
        self._notify = None
        if self.enabled:
            try:
                from systemd import daemon
            except ImportError:
                raise RuntimeError(
                    "systemd started sriov-node as a Type=notify service, but the systemd-python package is "
                    "not installed (pip install systemd-python; it builds against libsystemd-dev); "
                    "or run `sriov-node daemon --no-notify`")
            self._notify = daemon.notify
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
