"""IFLA_VFINFO_LIST in bytes: the VF settings of an RTM_SETLINK packed, those of an RTM_NEWLINK read.

Pure (no socket, no pyroute2): `links.py` sends and receives through pyroute2 and hands this module
the one attribute whose nesting is the cost, 64 IFLA_VF_INFO with up to 7 attributes each. Built as
pyroute2 objects, one per attribute, encoding a request and looking attributes up one by one took
most of a daemon's reaction to a PF driver reload; packed and walked here, each VF is one pass.

The layout is the kernel's (include/uapi/linux/if_link.h; net/core/rtnetlink.c: do_setlink walks
IFLA_VFINFO_LIST, each IFLA_VF_INFO parsed against ifla_vf_policy, then do_setvfinfo applies MAC,
VLAN, VLAN_LIST, TX_RATE, RATE, SPOOFCHK, LINK_STATE, RSS_QUERY_EN, TRUST in that order, whatever
the order of the attributes; rtnl_fill_vfinfo answers the same structs):

    struct ifla_vf_mac        { __u32 vf; __u8 mac[32]; }                        IFLA_VF_MAC 1
    struct ifla_vf_vlan       { __u32 vf, vlan, qos; }                           IFLA_VF_VLAN 2
    struct ifla_vf_spoofchk   { __u32 vf, setting; }                             IFLA_VF_SPOOFCHK 4
    struct ifla_vf_link_state { __u32 vf, link_state; }                          IFLA_VF_LINK_STATE 5
    struct ifla_vf_rate       { __u32 vf, min_tx_rate, max_tx_rate; }            IFLA_VF_RATE 6
    struct ifla_vf_trust      { __u32 vf, setting; }                             IFLA_VF_TRUST 9
    IFLA_VF_VLAN_LIST 12 { IFLA_VF_VLAN_INFO 1:
    struct ifla_vf_vlan_info  { __u32 vf, vlan, qos; __be16 vlan_proto; }  16 bytes with its padding
                                                         (the policy refuses fewer with EINVAL) }
    struct ifla_vf_guid       { __u32 vf; __u64 guid; }                          IFLA_VF_IB_NODE_GUID 10,
                                                                                 IFLA_VF_IB_PORT_GUID 11

InfiniBand GUIDs: do_setvfinfo *returns* after IFLA_VF_IB_NODE_GUID (`return handle_vf_guid(...)`),
so a port GUID in the same IFLA_VF_INFO is never applied: each GUID travels in an IFLA_VF_INFO of
its own (node first). The u64 is host-endian, the number the text `xx:..:xx` reads big-endian (as
iproute2's `ip link set ... vf N node_guid` parses it); sent as pyroute2 packs it (the vf, then the
GUID in a 32-byte field at offset 8: the kernel's policy wants at least its 16-byte struct),
reported by rtnl_fill_vfinfo through ndo_get_vf_guid (5.5+) as the 16-byte struct.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sriov_node.model import LINK_STATES, VLAN_PROTOS, VfLinks

IFLA_NUM_VF = 21
IFLA_VFINFO_LIST = 22
IFLA_VF_INFO = 1
IFLA_VF_MAC, IFLA_VF_VLAN, IFLA_VF_SPOOFCHK, IFLA_VF_LINK_STATE, IFLA_VF_RATE = 1, 2, 4, 5, 6
IFLA_VF_TRUST, IFLA_VF_VLAN_LIST = 9, 12
IFLA_VF_IB_NODE_GUID, IFLA_VF_IB_PORT_GUID = 10, 11
IFLA_VF_VLAN_INFO = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
NLA_MAX_LEN = 0xFFFF  # an attribute's length is 16 bits, header included
NOT_REPORTED = 0xFFFFFFFF  # spoofchk/trust when the driver does not report them

_HEADER = struct.Struct("=HH")  # struct nlattr {__u16 nla_len, nla_type}
_U32 = struct.Struct("=I")
_U32x2 = struct.Struct("=II")
_U32x3 = struct.Struct("=III")
_BE16 = struct.Struct(">H")
_GUID = struct.Struct("=I4xQ")  # struct ifla_vf_guid
_GUID_ATTRS = {"node_guid": IFLA_VF_IB_NODE_GUID, "port_guid": IFLA_VF_IB_PORT_GUID}
_PROTO_NAMES = {code: name for name, code in VLAN_PROTOS.items()}
# the smallest payload each struct attribute may have (shorter ones are not read)
_SIZES = {IFLA_VF_MAC: 36, IFLA_VF_VLAN: 12, IFLA_VF_SPOOFCHK: 8, IFLA_VF_LINK_STATE: 8, IFLA_VF_RATE: 12,
          IFLA_VF_TRUST: 8}

VfChange = Tuple[int, Dict[str, Any]]


# ---------------------------------------------------------------------------- encoding


def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _HEADER.pack(length, kind) + payload + b"\0" * (-length & 3)


def encode_vf_info(vf: int, change: Dict[str, Any]) -> bytes:
    """One IFLA_VF_INFO, header included: the attributes of `change` in the kernel's processing order
    (the keys as `VfLinks.wanted()` names them)."""
    out = []
    if "mac" in change:
        mac = bytes.fromhex(change["mac"].replace(":", ""))
        out.append(_nla(IFLA_VF_MAC, _U32.pack(vf) + mac.ljust(32, b"\0")))
    if "vlan" in change:
        vlan, qos, proto = change["vlan"]
        # IFLA_VF_VLAN_LIST carries the protocol (IFLA_VF_VLAN is 802.1Q only)
        info = _U32x3.pack(vf, vlan, qos) + _BE16.pack(VLAN_PROTOS[proto]) + b"\0\0"
        out.append(_nla(IFLA_VF_VLAN_LIST, _nla(IFLA_VF_VLAN_INFO, info)))
    if "rate" in change:
        low, high = change["rate"]
        out.append(_nla(IFLA_VF_RATE, _U32x3.pack(vf, low, high)))
    if "spoofchk" in change:
        out.append(_nla(IFLA_VF_SPOOFCHK, _U32x2.pack(vf, int(change["spoofchk"]))))
    if "link_state" in change:
        out.append(_nla(IFLA_VF_LINK_STATE, _U32x2.pack(vf, LINK_STATES.index(change["link_state"]))))
    if "trust" in change:
        out.append(_nla(IFLA_VF_TRUST, _U32x2.pack(vf, int(change["trust"]))))
    infos = [_nla(IFLA_VF_INFO, b"".join(out))] if out else []
    for key, kind in _GUID_ATTRS.items():  # one IFLA_VF_INFO each: the kernel applies one GUID per info
        if key in change:
            guid = _GUID.pack(vf, int(change[key].replace(":", ""), 16)).ljust(36, b"\0")
            infos.append(_nla(IFLA_VF_INFO, _nla(kind, guid)))
    return b"".join(infos) if infos else _nla(IFLA_VF_INFO, b"")


def encode_vfinfo_list(changes: Sequence[VfChange]) -> bytes:
    """The payload of IFLA_VFINFO_LIST (its header is the sender's): one IFLA_VF_INFO per VF, in order.

    Raises ValueError when the list does not fit one attribute's 16-bit length."""
    payload = b"".join([encode_vf_info(vf, change) for vf, change in changes])
    if 4 + len(payload) > NLA_MAX_LEN:
        raise ValueError(f"the settings of {len(changes)} VFs take {len(payload)} bytes, more than one netlink "
                         f"attribute holds ({NLA_MAX_LEN - 4})")
    return payload


# ---------------------------------------------------------------------------- parsing


def _walk(data: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[start:end]."""
    out = []
    unpack = _HEADER.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if length < 4 or start + length > end:
            break  # a truncated attribute ends the chain, as nla_ok() says
        out.append((kind & NLA_TYPE_MASK, start + 4, start + length))
        start += (length + 3) & ~3
    return out


def newlink_vf_list(data: bytes, offset: int = 0) -> Tuple[Optional[int], Optional[Tuple[int, int]]]:
    """IFLA_NUM_VF and the (start, end) of IFLA_VFINFO_LIST's payload in the RTM_NEWLINK at data[offset:]
    (struct nlmsghdr, 16 bytes, and struct ifinfomsg, 16, then the attributes); None for what is absent."""
    (length,) = _U32.unpack_from(data, offset)
    count, span = None, None
    for kind, start, end in _walk(data, offset + 32, offset + min(length, len(data) - offset)):
        if kind == IFLA_NUM_VF and end - start >= 4:
            (count,) = _U32.unpack_from(data, start)
        elif kind == IFLA_VFINFO_LIST:
            span = (start, end)
    return count, span


def vf_attributes(data: bytes, start: int, end: int) -> List[Dict[int, Tuple[int, int]]]:
    """Each IFLA_VF_INFO in data[start:end] (an IFLA_VFINFO_LIST's payload) as one dict, made in one
    pass over its attributes: attribute type -> (payload start, payload end)."""
    return [{kind: (s, e) for kind, s, e in _walk(data, info_start, info_end)}
            for info_kind, info_start, info_end in _walk(data, start, end) if info_kind == IFLA_VF_INFO]


def _reported(data: bytes, at: Optional[Tuple[int, int]]) -> Optional[bool]:
    if at is None:
        return None
    (_, value) = _U32x2.unpack_from(data, at[0])
    return None if value == NOT_REPORTED else bool(value)


def vf_links(data: bytes, attrs: Dict[int, Tuple[int, int]]) -> Tuple[int, VfLinks]:
    """(VF index, settings) from one VF's attributes (`vf_attributes`)."""
    attrs = {kind: at for kind, at in attrs.items() if at[1] - at[0] >= _SIZES.get(kind, 0)}
    index = next((_U32.unpack_from(data, attrs[kind][0])[0] for kind in _SIZES if kind in attrs), None)
    if index is None:
        raise ValueError("an IFLA_VF_INFO names no VF (none of its attributes carries the VF index)")
    mac = vid = qos = proto = low = high = None
    state = None
    if IFLA_VF_MAC in attrs:
        start = attrs[IFLA_VF_MAC][0] + 4
        mac = data[start:start + 6].hex(":")
    if IFLA_VF_VLAN in attrs:
        _, vid, qos = _U32x3.unpack_from(data, attrs[IFLA_VF_VLAN][0])
    if IFLA_VF_VLAN_LIST in attrs:
        entries = [(s, e) for kind, s, e in _walk(data, *attrs[IFLA_VF_VLAN_LIST])
                   if kind == IFLA_VF_VLAN_INFO and e - s >= 14]
        if entries:
            proto = _PROTO_NAMES.get(_BE16.unpack_from(data, entries[0][0] + 12)[0])
    if IFLA_VF_RATE in attrs:
        _, low, high = _U32x3.unpack_from(data, attrs[IFLA_VF_RATE][0])
    if IFLA_VF_LINK_STATE in attrs:
        (_, code) = _U32x2.unpack_from(data, attrs[IFLA_VF_LINK_STATE][0])
        state = LINK_STATES[code] if code < len(LINK_STATES) else None
    guids = {}
    for key, kind in _GUID_ATTRS.items():
        if kind in attrs and attrs[kind][1] - attrs[kind][0] >= _GUID.size:
            guids[key] = _GUID.unpack_from(data, attrs[kind][0])[1].to_bytes(8, "big").hex(":")
    vid = vid or 0
    return index, VfLinks(
        **guids,
        mac=mac,
        vlan=vid,
        qos=qos or 0,
        # a VF without a VLAN reports protocol 0; "no VLAN" compares as 802.1Q
        vlan_proto=proto if (proto and vid) else "802.1Q",
        spoofchk=_reported(data, attrs.get(IFLA_VF_SPOOFCHK)),
        trust=_reported(data, attrs.get(IFLA_VF_TRUST)),
        link_state=state,
        min_tx_rate=low,
        max_tx_rate=high,
    )


def parse_vfinfo_list(data: bytes, start: int, end: int) -> Dict[int, VfLinks]:
    """Every VF's settings from an IFLA_VFINFO_LIST's payload, data[start:end]."""
    return dict(vf_links(data, attrs) for attrs in vf_attributes(data, start, end))
