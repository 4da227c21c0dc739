"""The rtnetlink messages sriov-node builds, checked byte by byte (no kernel needed).

pyroute2 0.9 encodes IFLA_VF_VLAN_INFO in 14 bytes; the kernel's policy wants the 16 of
struct ifla_vf_vlan_info and answers EINVAL otherwise (seen on 6.1 in the lab).
"""

from __future__ import annotations

import struct

from sriov_node.host.links import _vf_info_class, vf_info_attrs


def nested(data: bytes):
    """(type, payload) of each netlink attribute in `data`."""
    out = []
    while len(data) >= 4:
        length, kind = struct.unpack("=HH", data[:4])
        out.append((kind & 0x3FFF, data[4:length]))
        data = data[(length + 3) & ~3:]
    return out


def encode(changes):
    msg = _vf_info_class()()
    msg["index"] = 7
    msg["attrs"] = [("IFLA_VFINFO_LIST", {"attrs": [
        ("IFLA_VF_INFO", {"attrs": vf_info_attrs(vf, change)}) for vf, change in changes]})]
    msg.encode()
    return bytes(msg.data[16 + 16:])  # after nlmsghdr and ifinfomsg


def test_vlan_info_is_sixteen_bytes_with_the_protocol_big_endian():
    (vfinfo_list,) = nested(encode([(3, {"vlan": (100, 5, "802.1ad")})]))
    assert vfinfo_list[0] == 22  # IFLA_VFINFO_LIST
    (vf_info,) = nested(vfinfo_list[1])
    (vlan_list,) = nested(vf_info[1])
    assert vlan_list[0] == 12  # IFLA_VF_VLAN_LIST
    (info,) = nested(vlan_list[1])
    assert info[0] == 1 and len(info[1]) == 16
    assert struct.unpack("=III", info[1][:12]) == (3, 100, 5) and info[1][12:14] == b"\x88\xa8"


def test_many_vfs_travel_in_one_list_in_the_kernels_order():
    (vfinfo_list,) = nested(encode([(0, {"trust": True, "mac": "02:00:00:00:00:01", "rate": (0, 100)}),
                                    (1, {"spoofchk": False, "link_state": "disable"})]))
    infos = nested(vfinfo_list[1])
    assert [kind for kind, _ in infos] == [1, 1]  # two IFLA_VF_INFO in one IFLA_VFINFO_LIST
    assert [kind for kind, _ in nested(infos[0][1])] == [1, 6, 9]  # MAC, RATE, TRUST
    assert [kind for kind, _ in nested(infos[1][1])] == [4, 5]  # SPOOFCHK, LINK_STATE
    link_state = nested(infos[1][1])[1][1]
    assert struct.unpack("=II", link_state) == (1, 2)  # vf 1, IFLA_VF_LINK_STATE_DISABLE
