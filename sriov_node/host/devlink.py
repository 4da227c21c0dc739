"""The devlink capability: the eswitch mode of a PF (generic netlink through pyroute2)."""

from __future__ import annotations

from typing import Optional

from sriov_node.host.sysfs import WriteCount


class Devlink:
    """No devlink behind this root (a captured tree): the mode is unknown."""

    available = False

    def __init__(self, counter: Optional[WriteCount] = None):
        self.counter = counter or WriteCount()

    def eswitch_mode(self, handle: str) -> Optional[str]:
        return None


class NetlinkDevlink(Devlink):
    """The live kernel's devlink (generic netlink)."""

    available = True
