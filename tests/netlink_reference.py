"""pyroute2's own way with IFLA_VFINFO_LIST, as sriov-node used it before `host/vfinfo.py`: the
reference the packed bytes and the one-pass parser are held to (tests/test_netlink_encoding.py),
and the "before" of scripts/bench.py's netlink row.

- `pyroute2_setlink(index, changes)`: the RTM_SETLINK built from pyroute2's nested objects (its
  ifinfmsg, with IFLA_VF_VLAN_INFO sized as the kernel's 16-byte struct);
- `newlink(vfs)`: an RTM_NEWLINK as the kernel answers RTEXT_FILTER_VF, from VfLinks;
- `lookup_vf_info(info)`: one decoded IFLA_VF_INFO read attribute by attribute (`info.get()`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from sriov_node.model import LINK_STATES, VLAN_PROTOS, VfLinks

NOT_REPORTED = 0xFFFFFFFF
RTM_NEWLINK = 16
_CLASS: list = []


def vf_info_class():
    """pyroute2's ifinfmsg with IFLA_VF_VLAN_INFO sized as the kernel's struct (pyroute2 0.9 packs
    struct ifla_vf_vlan_info in 14 bytes; the kernel's policy refuses anything under 16). pyroute2
    caches compiled attribute maps on each class, so every level of the nest is subclassed with its
    cache reset."""
    if _CLASS:
        return _CLASS[0]
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

    _CLASS.append(ifinfmsg_vf)
    return ifinfmsg_vf


def vf_info_attrs(vf: int, change: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """One IFLA_VF_INFO's attributes as pyroute2 takes them, in the kernel's processing order."""
    attrs: List[Tuple[str, Dict[str, Any]]] = []
    if "mac" in change:
        attrs.append(("IFLA_VF_MAC", {"vf": vf, "mac": change["mac"]}))
    if "vlan" in change:
        vlan, qos, proto = change["vlan"]
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


def pyroute2_setlink(index: int, changes, ifname: Optional[str] = None) -> bytes:
    """The whole RTM_SETLINK (header included) as pyroute2 encodes it from nested objects; with
    `ifname`, the netdev named by IFLA_IFNAME first (index 0: the kernel's lookup by name)."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_SETLINK

    msg = vf_info_class()()
    msg["header"]["type"] = RTM_SETLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["index"] = index
    msg["attrs"] = ([("IFLA_IFNAME", ifname)] if ifname is not None else []) + [("IFLA_VFINFO_LIST", {"attrs": [
        ("IFLA_VF_INFO", {"attrs": vf_info_attrs(vf, change)}) for vf, change in changes]})]
    msg.encode()
    return bytes(msg.data)


def newlink(vfs: Dict[int, VfLinks], index: int = 7, count: Optional[int] = None, no_vlan_proto: int = 0,
            vlan_list: bool = True, stats: bool = False) -> bytes:
    """An RTM_NEWLINK as the kernel's rtnl_fill_vfinfo answers it (encoded by pyroute2): every VF
    with MAC, VLAN, TX_RATE, SPOOFCHK, LINK_STATE, RATE, RSS_QUERY_EN, TRUST, VLAN_LIST (and STATS).
    None stands for what a driver does not report."""
    msg = vf_info_class()()
    msg["header"]["type"] = RTM_NEWLINK
    msg["index"] = index
    attrs = [("IFLA_IFNAME", f"if{index}"), ("IFLA_MTU", 1500)]
    if count is not None or vfs:
        attrs.append(("IFLA_NUM_VF", len(vfs) if count is None else count))
    infos = []
    for vf, s in sorted(vfs.items()):
        proto = VLAN_PROTOS[s.vlan_proto] if s.vlan else no_vlan_proto
        info = [("IFLA_VF_MAC", {"vf": vf, "mac": s.mac}),
                ("IFLA_VF_VLAN", {"vf": vf, "vlan": s.vlan, "qos": s.qos}),
                ("IFLA_VF_TX_RATE", {"vf": vf, "tx_rate": s.max_tx_rate or 0}),
                ("IFLA_VF_SPOOFCHK", {"vf": vf, "spoofchk": NOT_REPORTED if s.spoofchk is None else int(s.spoofchk)}),
                ("IFLA_VF_LINK_STATE", {"vf": vf, "link_state": 3 if s.link_state is None
                                        else LINK_STATES.index(s.link_state)}),
                ("IFLA_VF_RSS_QUERY_EN", {"vf": vf, "rss_query_en": 0}),
                ("IFLA_VF_TRUST", {"vf": vf, "trust": NOT_REPORTED if s.trust is None else int(s.trust)})]
        if s.min_tx_rate is not None:
            info.insert(3, ("IFLA_VF_RATE", {"vf": vf, "min_tx_rate": s.min_tx_rate, "max_tx_rate": s.max_tx_rate}))
        if vlan_list:
            info.append(("IFLA_VF_VLAN_LIST", {"attrs": [("IFLA_VF_VLAN_INFO", {
                "vf": vf, "vlan": s.vlan, "qos": s.qos, "proto": proto})]}))
        if stats:
            info.append(("IFLA_VF_STATS", {"attrs": [("IFLA_VF_STATS_RX_PACKETS", 5), ("IFLA_VF_STATS_TX_BYTES", 9)]}))
        infos.append(("IFLA_VF_INFO", {"attrs": info}))
    if vfs:
        attrs.append(("IFLA_VFINFO_LIST", {"attrs": infos}))
    attrs.append(("IFLA_TXQLEN", 1000))
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def _reported(info: Any, attr: str, field: str):
    value = info.get(attr)
    if value is None:
        return None
    got = value[field]
    return None if got == NOT_REPORTED else got


def lookup_vf_info(info: Any) -> Tuple[int, VfLinks]:
    """(VF index, settings) from one decoded IFLA_VF_INFO, each attribute looked up on its own."""
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
        vlan_proto=proto if (proto and vid) else "802.1Q",
        spoofchk=None if spoof is None else bool(spoof),
        trust=None if trust is None else bool(trust),
        link_state=LINK_STATES[state["link_state"]] if state is not None and state["link_state"] < 3 else None,
        min_tx_rate=rate["min_tx_rate"] if rate is not None else None,
        max_tx_rate=rate["max_tx_rate"] if rate is not None else None,
    )
