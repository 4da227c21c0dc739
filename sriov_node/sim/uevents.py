"""Listening to the simulated kernel's uevents: the model appends each one to its log and rings a
datagram socket; the listener reads the log from where it left off."""

from __future__ import annotations

import collections
import errno
import json
import os
import socket
from typing import Deque, Dict, List, Optional, Tuple

from sriov_node.host.links import LinkListener
from sriov_node.locks import FileLock
from sriov_node.sim.tree import LINK_LOG, LINK_SOCKET, LOCK, UEVENT_LOG, UEVENT_SOCKET, SimTree, unix_address

# Bytes of unread uevents a listener holds unless the model says otherwise (a 256-VF burst fits)
UEVENT_BUFFER = 4 << 20


class SimUeventSocket:
    """Bound at <root>/run/sriov-node-sim/uevents.sock. As the kernel's netlink socket, it hears the
    uevents sent once it is bound, and holds up to the model's `uevent_buffer` bytes of them unread:
    the rest of a burst that finds it full is lost, and the next receive raises ENOBUFS (as recvmsg
    does after netlink_overrun), then returns the events it kept."""

    description = "the simulated kernel's uevents"
    SOCKET, LOG = UEVENT_SOCKET, UEVENT_LOG

    def __init__(self, root: str):
        root = os.path.abspath(root)
        self.path = os.path.join(root, self.SOCKET)
        self.log = os.path.join(root, self.LOG)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with unix_address(self.path) as address:
            self.sock.bind(address)
        self.sock.setblocking(False)
        self.model = SimTree(root)
        # Under the model's lock no write is between its log append and its ring: the events after
        # this offset are exactly those sent once the socket was bound.
        with FileLock(os.path.join(root, LOCK)):
            try:
                self.offset = os.stat(self.log).st_size
            except FileNotFoundError:
                self.offset = 0
        self.queue: Deque[Dict[str, str]] = collections.deque()
        self.overrun = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> Optional[Dict[str, str]]:
        if not self.queue and not self.overrun:
            self._read()
        if self.overrun:
            self.overrun = False
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        return self.queue.popleft() if self.queue else None

    def _read(self) -> None:
        """The rings first, then the log: a write whose events come after the read rings again."""
        while True:
            try:
                self.sock.recv(64)
            except BlockingIOError:
                break
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        data = data[:data.rfind(b"\n") + 1]  # a line still being appended is read next time
        self.offset += len(data)
        buffer = int(self.model._load().get("uevent_buffer", UEVENT_BUFFER))  # as SO_RCVBUF: settable any time
        held = 0
        for line in data.splitlines():
            held += len(line) + 1
            if held > buffer:
                self.overrun = True  # what was sent once the buffer was full is gone
                return
            self.queue.append(json.loads(line))

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class SimLinkSocket(SimUeventSocket, LinkListener):
    """rtnetlink's link group on the simulated kernel (`Links.listen`): the RTM_NEWLINK of each
    netdev whose state a write changed, as (ifindex, ifname), held and lost as uevents are."""

    description = "the simulated kernel's link changes"
    SOCKET, LOG = LINK_SOCKET, LINK_LOG

    def receive(self) -> List[Tuple[int, str]]:  # type: ignore[override]
        out: List[Tuple[int, str]] = []
        while True:
            try:
                entry = SimUeventSocket.receive(self)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS or not out:
                    raise
                self.overrun = True  # said at the next receive, after what was read before it
                return out
            if entry is None:
                return out
            out.append((int(entry.get("IFINDEX") or 0), entry.get("IFNAME", "")))
