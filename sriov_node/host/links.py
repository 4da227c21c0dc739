"""The links capability: rtnetlink questions about netdevs (pyroute2, imported only when asked).

VF settings live in the PF's driver and travel as IFLA_VF_* attributes on the PF's netdev:
one RTM_GETLINK with RTEXT_FILTER_VF reads every VF; one RTM_SETLINK whose IFLA_VFINFO_LIST
carries one IFLA_VF_INFO per VF sets many (the kernel applies them in order and stops at the
first error, keeping what it applied).
"""

from __future__ import annotations

import errno
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sriov_node.host.sysfs import WriteCount
from sriov_node.model import LINK_STATES, VLAN_PROTOS, VfLinks

# One VF's wanted changes: {"mac": str, "vlan": (vlan, qos, proto), "rate": (min, max),
# "spoofchk": bool, "link_state": "auto"|..., "trust": bool}
VfChange = Tuple[int, Dict[str, Any]]

RTEXT_FILTER_VF = 1
RTEXT_FILTER_SKIP_STATS = 8  # without it 64+ VFs overflow the 16-bit nest length and the list comes back short
NOT_REPORTED = 0xFFFFFFFF  # spoofchk/trust when the driver does not report them


class Links:
    """No netlink behind this root (a captured tree): every answer is "unknown"."""

    available = False

    def __init__(self, counter: Optional[WriteCount] = None):
        self.counter = counter or WriteCount()

    def permanent_mac(self, ifname: str) -> Optional[str]:
        """IFLA_PERM_ADDRESS of `ifname`, lower-case, or None when unknown."""
        return None

    def vf_links(self, ifname: str) -> Dict[int, VfLinks]:
        """Every VF's settings, read in one request. Raises OSError when they cannot be read."""
        raise OSError(errno.EOPNOTSUPP, "no netlink: this root is a captured tree")

    def altnames(self, ifname: str) -> Optional[Tuple[str, ...]]:
        """The alternative names of `ifname` (IFLA_PROP_LIST's IFLA_ALT_IFNAME), () none, None unknown."""
        return None

    def set_vf_links(self, ifname: str, changes: Sequence[VfChange]) -> None:
        """All changes in one request; raises OSError(errno) at the kernel's first refusal."""
        raise OSError(errno.EROFS, "no netlink: this root is a captured tree")

    def set_mtu(self, ifname: str, mtu: int) -> None:
        raise OSError(errno.EROFS, "no netlink: this root is a captured tree")


def _vf_info_class():
    """pyroute2's ifinfmsg with IFLA_VF_VLAN_INFO sized as the kernel's struct (16 bytes).

    pyroute2 0.9 encodes struct ifla_vf_vlan_info {u32 vf, vlan, qos; __be16 proto} as 14
    bytes, and the kernel's policy refuses anything under 16 with EINVAL. pyroute2 caches
    compiled attribute maps on each class, so every level of the nest is subclassed with its
    cache reset.
    """
    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    class ifinfmsg_vf(ifinfmsg):
        _nlmsg_base__compiled_nla = False

        class vflist(ifinfmsg.vflist):
            _nlmsg_base__compiled_nla = False

            class vfinfo(ifinfmsg.vflist.vfinfo):
                _nlmsg_base__compiled_nla = False

                class vf_vlist(ifinfmsg.vflist.vfinfo.vf_vlist):
                    _nlmsg_base__compiled_nla = False

                    class ivvi(nla):
                        fields = (("vf", "I"), ("vlan", "I"), ("qos", "I"), ("proto", ">H"), ("__pad", "2x"))

    return ifinfmsg_vf


def vf_info_attrs(vf: int, change: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """One IFLA_VF_INFO's attributes, in the kernel's processing order."""
    attrs: List[Tuple[str, Dict[str, Any]]] = []
    if "mac" in change:
        attrs.append(("IFLA_VF_MAC", {"vf": vf, "mac": change["mac"]}))
    if "vlan" in change:
        vlan, qos, proto = change["vlan"]
        # IFLA_VF_VLAN_LIST carries the protocol (IFLA_VF_VLAN is 802.1Q only)
        attrs.append(("IFLA_VF_VLAN_LIST", {"attrs": [("IFLA_VF_VLAN_INFO", {
            "vf": vf, "vlan": vlan, "qos": qos, "proto": VLAN_PROTOS[proto]})]}))
    if "rate" in change:
        low, high = change["rate"]
        attrs.append(("IFLA_VF_RATE", {"vf": vf, "min_tx_rate": low, "max_tx_rate": high}))
    if "spoofchk" in change:
        attrs.append(("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": int(change["spoofchk"])}))
    if "link_state" in change:
        attrs.append(("IFLA_VF_LINK_STATE", {"vf": vf, "link_state": LINK_STATES.index(change["link_state"])}))
    if "trust" in change:
        attrs.append(("IFLA_VF_TRUST", {"vf": vf, "trust": int(change["trust"])}))
    return attrs


def _reported(info: Any, attr: str, field: str) -> Optional[int]:
    value = info.get(attr)
    if value is None:
        return None
    got = value[field]
    return None if got == NOT_REPORTED else got


def parse_vf_info(info: Any) -> Tuple[int, VfLinks]:
    """(VF index, settings) from one IFLA_VF_INFO of an RTM_NEWLINK reply."""
    mac = info.get("IFLA_VF_MAC")
    vlan = info.get("IFLA_VF_VLAN")
    vlan_list = info.get("IFLA_VF_VLAN_LIST")
    proto = None
    if vlan_list is not None:
        entries = vlan_list.get_attrs("IFLA_VF_VLAN_INFO")
        if entries:
            proto = next((name for name, code in VLAN_PROTOS.items() if code == entries[0]["proto"]), None)
    rate = info.get("IFLA_VF_RATE")
    state = info.get("IFLA_VF_LINK_STATE")
    spoof, trust = _reported(info, "IFLA_VF_SPOOFCHK", "spoofchk"), _reported(info, "IFLA_VF_TRUST", "trust")
    vid = vlan["vlan"] if vlan is not None else 0
    return mac["vf"], VfLinks(
        mac=mac["mac"].lower() if mac is not None else None,
        vlan=vid,
        qos=vlan["qos"] if vlan is not None else 0,
        # a VF without a VLAN reports protocol 0; "no VLAN" compares as 802.1Q
        vlan_proto=proto if (proto and vid) else "802.1Q",
        spoofchk=None if spoof is None else bool(spoof),
        trust=None if trust is None else bool(trust),
        link_state=LINK_STATES[state["link_state"]] if state is not None and state["link_state"] < 3 else None,
        min_tx_rate=rate["min_tx_rate"] if rate is not None else None,
        max_tx_rate=rate["max_tx_rate"] if rate is not None else None,
    )


def altnames_of(msg: Any) -> Tuple[str, ...]:
    """The alternative names in one RTM_NEWLINK (IFLA_PROP_LIST, one IFLA_ALT_IFNAME each; kernel 5.5+)."""
    props = msg.get("IFLA_PROP_LIST")
    return tuple(props.get_attrs("IFLA_ALT_IFNAME")) if props is not None else ()


class NetlinkLinks(Links):
    """The live kernel's rtnetlink, in this process's network namespace."""

    available = True

    def __init__(self, counter: Optional[WriteCount] = None):
        super().__init__(counter)
        self._ipr = None

    def _route(self):
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def _index(self, ifname: str) -> int:
        found = self._route().link_lookup(ifname=ifname)
        if not found:
            raise OSError(errno.ENODEV, f"no network interface {ifname!r}")
        return found[0]

    @staticmethod
    def _oserror(exc: Exception) -> OSError:
        code = getattr(exc, "code", None)
        if isinstance(exc, OSError):
            return exc
        return OSError(code or errno.EIO, str(exc))

    def permanent_mac(self, ifname: str) -> Optional[str]:
        try:
            links = self._route().link("get", ifname=ifname)
            mac = links[0].get_attr("IFLA_PERM_ADDRESS") if links else None
            return mac.lower() if mac else None
        except Exception:  # netlink errors: the MAC is simply unknown
            return None

    def altnames(self, ifname: str) -> Optional[Tuple[str, ...]]:
        try:
            links = self._route().link("get", ifname=ifname)
        except Exception:  # gone, or netlink refused: unknown
            return None
        return altnames_of(links[0]) if links else None

    def vf_links(self, ifname: str) -> Dict[int, VfLinks]:
        try:
            (msg,) = self._route().link("get", index=self._index(ifname),
                                        ext_mask=RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS)
        except Exception as exc:
            raise self._oserror(exc)
        count = msg.get("IFLA_NUM_VF")
        vflist = msg.get("IFLA_VFINFO_LIST")
        if vflist is None:
            if count:
                raise OSError(errno.EOPNOTSUPP, f"the driver of {ifname} does not report VF settings")
            return {}
        found = dict(parse_vf_info(info) for info in vflist.get_attrs("IFLA_VF_INFO"))
        if count is not None and len(found) != count:
            raise OSError(errno.EMSGSIZE, f"{ifname} reported {len(found)} of {count} VFs (a list too long for "
                                          "one netlink attribute, or a VF its driver could not describe)")
        return found

    def set_vf_links(self, ifname: str, changes: Sequence[VfChange]) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_SETLINK

        msg = _vf_info_class()()
        msg["header"]["type"] = RTM_SETLINK
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        msg["index"] = self._index(ifname)
        msg["attrs"] = [("IFLA_VFINFO_LIST", {"attrs": [
            ("IFLA_VF_INFO", {"attrs": vf_info_attrs(vf, change)}) for vf, change in changes]})]
        self.counter.count += 1
        try:
            # nlm_request_batch: IPRoute.nlm_request of pyroute2 0.9.7 fails on a plain request
            for _ in self._route().nlm_request_batch([msg]):
                pass
        except Exception as exc:
            raise self._oserror(exc)

    def set_mtu(self, ifname: str, mtu: int) -> None:
        self.counter.count += 1
        try:
            self._route().link("set", index=self._index(ifname), mtu=mtu)
        except Exception as exc:
            raise self._oserror(exc)
