"""The links capability: rtnetlink questions about netdevs (pyroute2, imported only when asked)."""

from __future__ import annotations

from typing import Optional

from sriov_node.host.sysfs import WriteCount


class Links:
    """No netlink behind this root (a captured tree): every answer is "unknown"."""

    available = False

    def __init__(self, counter: Optional[WriteCount] = None):
        self.counter = counter or WriteCount()

    def permanent_mac(self, ifname: str) -> Optional[str]:
        """IFLA_PERM_ADDRESS of `ifname`, lower-case, or None when unknown."""
        return None


class NetlinkLinks(Links):
    """The live kernel's rtnetlink, in this process's network namespace."""

    available = True

    def permanent_mac(self, ifname: str) -> Optional[str]:
        try:
            from pyroute2 import IPRoute
        except ImportError:  # pragma: no cover - pyroute2 is a dependency
            return None
        try:
            with IPRoute() as ipr:
                links = ipr.link("get", ifname=ifname)
                if not links:
                    return None
                mac = links[0].get_attr("IFLA_PERM_ADDRESS")
                return mac.lower() if mac else None
        except Exception:  # netlink errors: the MAC is simply unknown
            return None
