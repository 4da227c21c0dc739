"""The rtnetlink messages sriov-node builds and reads, checked byte by byte (no kernel needed).

The VF list of an RTM_SETLINK is packed by `host/vfinfo.py` and sent through pyroute2; the VF list
of an RTM_NEWLINK is read from the bytes pyroute2 received. Both are held to pyroute2's own
encoder and parser (tests/netlink_reference.py), and the parser to what the simulated kernel
answers. pyroute2 0.9 encodes IFLA_VF_VLAN_INFO in 14 bytes; the kernel's policy wants the 16
of struct ifla_vf_vlan_info and answers EINVAL otherwise (seen on 6.1 in the lab).
"""

from __future__ import annotations

import errno
import struct

import pytest

from sriov_node.host.links import NetlinkLinks, newlink_vf_links
from sriov_node.model import LINK_STATES, VfLinks
from tests.helpers import open_host
from tests.netlink_reference import lookup_vf_info, newlink, pyroute2_setlink

RTM_SETLINK = 19


class FakeRoute:
    """pyroute2's IPRoute as NetlinkLinks uses it: the messages it is given are encoded as pyroute2
    sends them; `answer` is what RTM_GETLINK returns, parsed as pyroute2 parses the kernel's bytes.
    Every request names the netdev itself (IFLA_IFNAME), so there is no index lookup to answer: a
    request that made one (link_lookup) fails here. ens1f0 is the only netdev (ifindex 7)."""

    def __init__(self, answer: bytes = b""):
        self.sent = []
        self.answer = answer

    def nlm_request_batch(self, msgs):
        from pyroute2.netlink.exceptions import NetlinkError

        for msg in msgs:
            msg.encode()
            self.sent.append(bytes(msg.data))
            if msg.get_attr("IFLA_IFNAME") != "ens1f0":  # rtnl_dev_get finds no such netdev
                raise NetlinkError(errno.ENODEV, "No such device")
        return iter(())

    def link(self, command, **kwargs):
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        assert command == "get" and "index" not in kwargs
        if kwargs["ifname"] != "ens1f0":
            raise NetlinkError(errno.ENODEV, "No such device")
        # a message before it: the answer is read at its offset in the buffer, as pyroute2 hands it over
        return [m for m in MarshalRtnl().parse(newlink({}, index=1) + self.answer) if m["index"] == 7]


def links_on(route: FakeRoute) -> NetlinkLinks:
    links = NetlinkLinks()
    links._ipr = route
    return links


def sent(changes) -> bytes:
    """The RTM_SETLINK NetlinkLinks sends for `changes` on ens1f0 (ifindex 7)."""
    route = FakeRoute()
    links_on(route).set_vf_links("ens1f0", changes)
    (data,) = route.sent
    return data


def nested(data: bytes):
    """(type, payload) of each netlink attribute in `data`."""
    out = []
    while len(data) >= 4:
        length, kind = struct.unpack("=HH", data[:4])
        out.append((kind & 0x3FFF, data[4:length]))
        data = data[(length + 3) & ~3:]
    return out


# every setting, several VFs, both VLAN protocols, and VFs changing only some of them
EVERY = [(i, {"mac": f"02:aa:bb:cc:dd:{i:02x}", "vlan": (100 + i, i % 8, "802.1ad" if i % 2 else "802.1Q"),
              "rate": (10 * i, 1000 + i), "spoofchk": bool(i % 2), "link_state": LINK_STATES[i % 3],
              "trust": not i % 2}) for i in range(64)]
SOME = [(0, {"trust": True}), (3, {"vlan": (0, 0, "802.1Q")}), (5, {"mac": "02:00:00:00:00:05", "rate": (0, 0)}),
        (9, {"vlan": (4095, 7, "802.1ad"), "link_state": "enable"}), (12, {"spoofchk": False, "trust": False})]


def test_vlan_info_is_sixteen_bytes_with_the_protocol_big_endian():
    ifname, vfinfo_list = nested(sent([(3, {"vlan": (100, 5, "802.1ad")})])[32:])  # after nlmsghdr and ifinfomsg
    assert ifname == (3, b"ens1f0\x00")  # IFLA_IFNAME
    assert vfinfo_list[0] == 22  # IFLA_VFINFO_LIST
    (vf_info,) = nested(vfinfo_list[1])
    (vlan_list,) = nested(vf_info[1])
    assert vlan_list[0] == 12  # IFLA_VF_VLAN_LIST
    (info,) = nested(vlan_list[1])
    assert info[0] == 1 and len(info[1]) == 16
    assert struct.unpack("=III", info[1][:12]) == (3, 100, 5) and info[1][12:14] == b"\x88\xa8"


def test_many_vfs_travel_in_one_list_in_the_kernels_order():
    _, vfinfo_list = nested(sent([(0, {"trust": True, "mac": "02:00:00:00:00:01", "rate": (0, 100)}),
                                  (1, {"spoofchk": False, "link_state": "disable"})])[32:])
    infos = nested(vfinfo_list[1])
    assert [kind for kind, _ in infos] == [1, 1]  # two IFLA_VF_INFO in one IFLA_VFINFO_LIST
    assert [kind for kind, _ in nested(infos[0][1])] == [1, 6, 9]  # MAC, RATE, TRUST
    assert [kind for kind, _ in nested(infos[1][1])] == [4, 5]  # SPOOFCHK, LINK_STATE
    link_state = nested(infos[1][1])[1][1]
    assert struct.unpack("=II", link_state) == (1, 2)  # vf 1, IFLA_VF_LINK_STATE_DISABLE


@pytest.mark.parametrize("changes", [EVERY, SOME, EVERY[:1]], ids=["64-vfs-every-setting", "some-settings", "one-vf"])
def test_the_packed_request_is_the_one_pyroute2_encodes(changes):
    data = sent(changes)
    header = struct.unpack_from("=IHH", data)
    assert header == (len(data), RTM_SETLINK, 0x5)  # NLM_F_REQUEST | NLM_F_ACK
    # all but the sequence number and port id: the netdev by name (ifindex 0), then the VF list
    assert data[16:] == pyroute2_setlink(0, changes, ifname="ens1f0")[16:]


def decoded(data: bytes):
    """Each IFLA_VF_INFO of an RTM_SETLINK as pyroute2's own ifinfmsg parser reads it: name -> fields."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    (msg,) = MarshalRtnl().parse(data)
    out = []
    for info in msg.get("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO"):
        attrs = {}
        for name, value in info["attrs"]:
            if name == "IFLA_VF_VLAN_LIST":
                value = [dict(entry) for entry in value.get_attrs("IFLA_VF_VLAN_INFO")]
            else:
                value = {k: v for k, v in value.items() if k in ("vf", "mac", "vlan", "qos", "proto", "spoofchk",
                                                                   "trust", "link_state", "min_tx_rate", "max_tx_rate")}
            attrs[name] = value
        out.append(attrs)
    return out


def test_pyroute2s_parser_reads_the_packed_request_as_its_own():
    ours, theirs = decoded(sent(EVERY)), decoded(pyroute2_setlink(0, EVERY, ifname="ens1f0"))
    assert ours == theirs and len(ours) == 64
    vf1 = ours[1]
    assert vf1["IFLA_VF_MAC"] == {"vf": 1, "mac": "02:aa:bb:cc:dd:01"}
    assert vf1["IFLA_VF_VLAN_LIST"] == [{"vf": 1, "vlan": 101, "qos": 1, "proto": 0x88A8}]
    assert ours[2]["IFLA_VF_VLAN_LIST"][0]["proto"] == 0x8100
    assert vf1["IFLA_VF_RATE"] == {"vf": 1, "min_tx_rate": 10, "max_tx_rate": 1001}
    assert (vf1["IFLA_VF_SPOOFCHK"]["spoofchk"], vf1["IFLA_VF_TRUST"]["trust"],
            vf1["IFLA_VF_LINK_STATE"]["link_state"]) == (1, 0, 1)
    assert decoded(sent(SOME)) == decoded(pyroute2_setlink(0, SOME, ifname="ens1f0"))


def test_each_request_names_its_netdev_and_an_absent_one_is_enodev_naming_it():
    """One round trip per question: the netdev travels by name in the request (the kernel looks it
    up: rtnl_dev_get), never through an index lookup first; a netdev that is not there is ENODEV."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    (msg,) = MarshalRtnl().parse(sent(SOME))
    assert msg["index"] == 0 and msg.get_attr("IFLA_IFNAME") == "ens1f0"
    for ask in (lambda links: links.vf_links("ens9"), lambda links: links.set_vf_links("ens9", SOME)):
        with pytest.raises(OSError) as err:
            ask(links_on(FakeRoute(newlink(KERNEL_VFS, count=4))))
        assert err.value.errno == errno.ENODEV and "'ens9'" in str(err.value)


def test_a_list_too_long_for_one_attribute_is_refused_before_anything_is_sent():
    route = FakeRoute()
    with pytest.raises(OSError) as err:
        links_on(route).set_vf_links("ens1f0", [(i, EVERY[0][1]) for i in range(600)])
    assert err.value.errno == errno.EMSGSIZE and "ens1f0" in str(err.value) and "600 VFs" in str(err.value)
    assert route.sent == []


# ---------------------------------------------------------------------------- reading


def read_both(data: bytes):
    """(one pass over the bytes, pyroute2's decoded attributes looked up one by one) of an RTM_NEWLINK."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    msgs = list(MarshalRtnl().parse(newlink({}, index=1) + data))
    msg = msgs[-1]
    assert msg.offset > 0
    _, ours = newlink_vf_links(msg)
    vflist = msg.get("IFLA_VFINFO_LIST")
    theirs = dict(lookup_vf_info(i) for i in vflist.get_attrs("IFLA_VF_INFO")) if vflist is not None else None
    return ours, theirs


KERNEL_VFS = {
    0: VfLinks(mac="02:aa:bb:cc:dd:00", vlan=100, qos=5, vlan_proto="802.1ad", spoofchk=False, trust=True,
               link_state="disable", min_tx_rate=100, max_tx_rate=2000),
    1: VfLinks(mac="02:aa:bb:cc:dd:01", vlan=4095, qos=0, vlan_proto="802.1Q", spoofchk=True, trust=False,
               link_state="enable", min_tx_rate=0, max_tx_rate=0),
    2: VfLinks(mac="00:00:00:00:00:00", vlan=0, qos=0, vlan_proto="802.1Q", spoofchk=None, trust=None,
               link_state=None, min_tx_rate=None, max_tx_rate=None),
    3: VfLinks(mac="0a:1b:2c:3d:4e:5f", vlan=7, qos=7, vlan_proto="802.1Q", spoofchk=True, trust=True,
               link_state="auto", min_tx_rate=0, max_tx_rate=100000),
}


@pytest.mark.parametrize("shape", [{}, {"no_vlan_proto": 0x8100}, {"vlan_list": False}, {"stats": True}],
                         ids=["kernel-6.1", "no-vlan-reported-as-802.1Q", "before-vlan-list", "with-stats"])
def test_one_pass_reads_what_pyroute2s_lookups_read(shape):
    ours, theirs = read_both(newlink(KERNEL_VFS, **shape))
    assert ours == theirs
    expected = dict(KERNEL_VFS)
    if shape.get("vlan_list") is False:  # no VLAN_LIST: the protocol is not known, read as 802.1Q
        expected[0] = VfLinks(**{**KERNEL_VFS[0].__dict__, "vlan_proto": "802.1Q"})
    assert ours == expected


def test_sixty_four_vfs_read_in_one_pass():
    vfs = {i: VfLinks(mac=f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", vlan=i, qos=i % 8,
                      vlan_proto="802.1ad" if i % 2 else "802.1Q", spoofchk=bool(i % 3), trust=bool(i % 5),
                      link_state=LINK_STATES[i % 3], min_tx_rate=i, max_tx_rate=10 * i) for i in range(64)}
    ours, theirs = read_both(newlink(vfs))
    assert ours == theirs == vfs


@pytest.mark.parametrize("nic,changes", [
    ("cx5", [(0, {"mac": "02:aa:bb:cc:dd:00", "vlan": (100, 5, "802.1ad"), "rate": (100, 2000), "spoofchk": False,
                  "link_state": "disable", "trust": True}), (2, {"vlan": (7, 0, "802.1Q"), "link_state": "enable"})]),
    ("i350", [(1, {"mac": "02:aa:bb:cc:dd:01", "vlan": (7, 3, "802.1Q"), "spoofchk": False})]),  # trust unreported
], ids=["mlx5", "igb"])
def test_the_simulated_kernels_answers_read_the_same_from_bytes(make_host, nic, changes):
    """What SimLinks answers (the model's VfLinks), put in the kernel's bytes, reads back unchanged."""
    host = make_host((nic, 1, None))
    pf = "0000:20:00.0"
    host.sysfs.set_num_vfs(pf, 4)
    ifname = sorted(host.sysfs.listdir("sys/bus/pci/devices", pf, "net"))[0]
    host.links.set_vf_links(ifname, changes)
    answer = open_host(host.root).links.vf_links(ifname)
    assert len(answer) == 4 and answer[changes[0][0]] != answer[3]
    ours, theirs = read_both(newlink(answer, no_vlan_proto=0x8100))
    assert ours == theirs == answer


def test_netlink_links_reads_the_list_from_the_bytes_it_received():
    links = links_on(FakeRoute(newlink(KERNEL_VFS, count=4)))
    assert links.vf_links("ens1f0") == KERNEL_VFS


def test_a_short_list_and_a_missing_list_are_errors():
    with pytest.raises(OSError) as err:
        links_on(FakeRoute(newlink(KERNEL_VFS, count=5))).vf_links("ens1f0")
    assert err.value.errno == errno.EMSGSIZE and "4 of 5" in str(err.value)
    with pytest.raises(OSError) as err:
        links_on(FakeRoute(newlink({}, count=3))).vf_links("ens1f0")
    assert err.value.errno == errno.EOPNOTSUPP
    assert links_on(FakeRoute(newlink({}, count=0))).vf_links("ens1f0") == {}
    assert links_on(FakeRoute(newlink({}))).vf_links("ens1f0") == {}
