"""Listening to the simulated kernel's uevents: a datagram socket the model sends each one to."""

from __future__ import annotations

import json
import os
import socket
from typing import Dict, Optional

from sriov_node.sim.tree import UEVENT_SOCKET, unix_address


class SimUeventSocket:
    """Bound at <root>/run/sriov-node-sim/uevents.sock; one datagram per uevent, as JSON."""

    description = "the simulated kernel's uevents"

    def __init__(self, root: str):
        self.path = os.path.join(os.path.abspath(root), UEVENT_SOCKET)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with unix_address(self.path) as address:
            self.sock.bind(address)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # a 256-VF burst fits
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> Optional[Dict[str, str]]:
        try:
            return json.loads(self.sock.recv(65536))
        except BlockingIOError:
            return None

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
