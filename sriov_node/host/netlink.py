"""Netlink reads through pyroute2, imported only here and only when called (≈100 ms to import)."""

from __future__ import annotations

from typing import Optional


def permanent_mac(ifname: str) -> Optional[str]:
    """IFLA_PERM_ADDRESS of `ifname` in this network namespace, or None."""
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
